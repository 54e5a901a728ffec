"""The reference market-data pipeline (the system under test of pipeline-check).

Each module is a service run as ``python -m services.<name>`` with ``compose/`` as working directory:

- ``ingestor``  WebSocket trade feed -> Kafka raw topic
- ``consumer``  Kafka raw topic -> validate/normalise -> Iceberg table (exactly once), bad records -> DLQ
- ``api``       FastAPI + DuckDB over the Iceberg table
- ``feed``      a demo Binance-style trade feed (the validator brings its own)

Shared plumbing (env parsing, logging, health server, Kafka helpers, Iceberg schema) lives in
``common``, ``kafka_util``, ``iceberg`` and ``trades``.
"""
