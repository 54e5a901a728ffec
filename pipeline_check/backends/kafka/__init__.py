"""Kafka: the topic and consumer-group probes and samplers, the record reader, the Kafka injector, record
codecs, the contract reader."""
