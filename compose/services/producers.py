"""The ingestor's Kafka producer: aiokafka or confluent-kafka (librdkafka) behind one small interface.

PRODUCER_CLIENT=aiokafka (default) | confluent
  aiokafka   partitions keyed records as the Java client does (murmur2 of the key)
  confluent  librdkafka's default partitioner, consistent_random: CRC32 of the key modulo the partition
             count (keyless records go to a random partition); a thread serves its delivery reports
KAFKA_COMPRESSION=lz4 (default) | none | gzip | snappy | zstd: the codec of every produced batch
Both produce with acks=all and idempotence (retries never duplicate or reorder a partition's records).
UNSAFE_PRODUCER_ACKS=1 (a deliberate fault): acks=1 and idempotence off, so a record the partition leader
acknowledged before its followers had it is lost when that leader dies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from .common import env_choice

log = logging.getLogger(__name__)

# librdkafka connects lazily: start() asks for metadata, and gives up after this long (aiokafka's start
# fails the same way when no broker answers), so the caller's retry loop sees Kafka missing
START_TIMEOUT_S = 5.0
POLL_S = 0.1


class ProducerClient(StrEnum):
    AIOKAFKA = "aiokafka"
    CONFLUENT = "confluent"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    client: ProducerClient = ProducerClient.AIOKAFKA
    compression: Compression = Compression.LZ4
    unsafe_acks_one: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProducerSettings:
        return cls(
            client=ProducerClient(env_choice("PRODUCER_CLIENT", ProducerClient.AIOKAFKA, tuple(ProducerClient), env)),
            compression=Compression(env_choice("KAFKA_COMPRESSION", Compression.LZ4, tuple(Compression), env)),
            unsafe_acks_one=env_choice("UNSAFE_PRODUCER_ACKS", "all", ("all", "1"), env) == "1",
        )

    def warnings(self) -> list[str]:
        if not self.unsafe_acks_one:
            return []
        return [
            "UNSAFE_PRODUCER_ACKS=1: acks=1 without idempotence; records acknowledged by a leader that dies "
            "before replicating them are lost (a deliberate fault, never for real use)"
        ]

    def describe(self) -> str:
        client = "confluent-kafka (librdkafka)" if self.client is ProducerClient.CONFLUENT else "aiokafka"
        acks = "acks=1, not idempotent" if self.unsafe_acks_one else "acks=all, idempotent"
        return f"{client}, {self.compression} compression, {acks}"

    def aiokafka_options(self, linger_ms: int, batch_bytes: int) -> dict[str, Any]:
        """Keyword arguments of AIOKafkaProducer for these settings."""
        return {
            "acks": 1 if self.unsafe_acks_one else "all",
            "enable_idempotence": not self.unsafe_acks_one,
            "compression_type": None if self.compression is Compression.NONE else self.compression.value,
            "linger_ms": linger_ms,
            "max_batch_size": batch_bytes,
        }

    def confluent_config(self, linger_ms: int, batch_bytes: int) -> dict[str, Any]:
        """librdkafka properties for these settings."""
        return {
            "acks": "1" if self.unsafe_acks_one else "all",
            "enable.idempotence": not self.unsafe_acks_one,
            "compression.type": self.compression.value,
            "partitioner": "consistent_random",
            "linger.ms": linger_ms,
            "batch.size": batch_bytes,
        }


class Producer(Protocol):
    """What the ingestor needs of a producer (AIOKafkaProducer's own shape)."""

    async def start(self) -> None: ...

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]:
        """Queue one record; the returned future settles when the broker acknowledged it (or it failed)."""
        ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...


def make_producer(
    settings: ProducerSettings, bootstrap: str, client_id: str, *, linger_ms: int, batch_bytes: int
) -> Producer:
    """A producer of the configured client (not started)."""
    if settings.client is ProducerClient.CONFLUENT:
        config = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "logger": logging.getLogger("librdkafka"),
            **settings.confluent_config(linger_ms, batch_bytes),
        }
        return ConfluentProducer(config)
    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id=client_id, **settings.aiokafka_options(linger_ms, batch_bytes)
    )
    return producer


def _settle(future: asyncio.Future[Any], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class ConfluentProducer:
    """confluent-kafka's Producer with asyncio futures: ``produce`` queues a record in librdkafka, a thread
    polls for delivery reports and settles each record's future on the event loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None

    async def start(self) -> None:
        # imported here: the aiokafka mode never loads librdkafka
        from confluent_kafka import Producer as LibrdkafkaProducer

        self._loop = asyncio.get_running_loop()
        producer = LibrdkafkaProducer(self._config)
        try:
            await asyncio.to_thread(producer.list_topics, timeout=START_TIMEOUT_S)
        except Exception:
            producer.purge()
            raise
        self._producer = producer
        self._poller = threading.Thread(target=self._poll, name="librdkafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_S)

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> asyncio.Future[Any]:
        from confluent_kafka import KafkaException

        loop = self._loop
        if self._producer is None or loop is None or self._closed.is_set():
            raise RuntimeError("producer is not started")
        future: asyncio.Future[Any] = loop.create_future()

        def delivered(error: Any, _message: Any) -> None:
            if self._closed.is_set():  # stopping: the ingestor has stopped waiting for reports
                return
            loop.call_soon_threadsafe(_settle, future, None if error is None else KafkaException(error))

        # BufferError when librdkafka's queue is full: the caller retries, as after aiokafka's errors
        self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        return future

    async def flush(self) -> None:
        """Until every queued record has its delivery report (the caller bounds the wait)."""
        while self._producer is not None and len(self._producer):
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._closed.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        if self._producer is not None:
            left = len(self._producer)
            if left:
                log.warning("stopping with %d records not acknowledged", left)
            # without pending records librdkafka's destroy does not wait for them
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None
