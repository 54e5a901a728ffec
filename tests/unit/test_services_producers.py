"""The ingestor's producer settings (compose/services/producers.py): client family, compression and the acks=1
fault, read from the environment and carried into each client's own configuration."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import confluent_kafka
import pytest
from aiokafka import AIOKafkaProducer
from services import producers
from services.common import ConfigError
from services.producers import Compression, ConfluentProducer, ProducerClient, ProducerSettings, make_producer

TUNING = {"linger_ms": 5, "batch_bytes": 262_144}


def test_defaults_are_aiokafka_lz4_acks_all_idempotent() -> None:
    settings = ProducerSettings.from_env({})
    assert settings == ProducerSettings(ProducerClient.AIOKAFKA, Compression.LZ4, unsafe_acks_one=False)
    assert settings.warnings() == []
    assert settings.describe() == "aiokafka, lz4 compression, acks=all, idempotent"
    assert ProducerSettings.from_env({"UNSAFE_PRODUCER_ACKS": "all"}) == settings


def test_each_setting_is_read_and_the_fault_warned_about() -> None:
    env = {"PRODUCER_CLIENT": "Confluent", "KAFKA_COMPRESSION": "zstd", "UNSAFE_PRODUCER_ACKS": "1"}
    settings = ProducerSettings.from_env(env)
    assert settings == ProducerSettings(ProducerClient.CONFLUENT, Compression.ZSTD, unsafe_acks_one=True)
    (warning,) = settings.warnings()
    assert warning.startswith("UNSAFE_PRODUCER_ACKS=1: acks=1 without idempotence") and "never for real use" in warning
    assert settings.describe() == "confluent-kafka (librdkafka), zstd compression, acks=1, not idempotent"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRODUCER_CLIENT": "sarama"}, "PRODUCER_CLIENT='sarama' (env): must be one of aiokafka, confluent"),
        ({"KAFKA_COMPRESSION": "brotli"}, "KAFKA_COMPRESSION='brotli' (env): must be one of none, gzip, snappy, lz4"),
        ({"UNSAFE_PRODUCER_ACKS": "0"}, "UNSAFE_PRODUCER_ACKS='0' (env): must be one of all, 1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ProducerSettings.from_env(env)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("unsafe", [False, True])
def test_aiokafka_gets_the_acks_idempotence_and_codec(compression: Compression, unsafe: bool) -> None:
    settings = ProducerSettings(ProducerClient.AIOKAFKA, compression, unsafe)

    async def build() -> AIOKafkaProducer:  # aiokafka binds its loop when built
        producer = make_producer(settings, "127.0.0.1:1", "ingestor", **TUNING)
        assert isinstance(producer, AIOKafkaProducer)
        await producer.stop()  # never started: closes what it built
        return producer

    producer = asyncio.run(build())
    assert producer._sender._acks == (1 if unsafe else -1)  # -1 is "all"
    assert (producer._txn_manager is None) is unsafe  # the idempotent producer's sequence numbers
    assert producer._compression_type == (None if compression is Compression.NONE else compression.value)
    assert producer.client._client_id == "ingestor"


class RecordingProducer:
    """Stands in for librdkafka's Producer: keeps its configuration, acknowledges every record at once."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.made.append(config)
        self.reports: list[Any] = []

    def list_topics(self, timeout: float) -> None:
        return None

    def produce(self, topic: str, value: bytes | None, key: bytes | None, on_delivery: Any) -> None:
        self.reports.append(on_delivery)

    def poll(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report(None, None)
        time.sleep(min(timeout, 0.01))  # a blocking wait, as librdkafka's
        return len(reports)

    def __len__(self) -> int:
        return len(self.reports)

    def purge(self) -> None:
        self.reports = []

    def flush(self, timeout: float) -> int:
        return 0


@pytest.mark.parametrize("unsafe", [False, True])
def test_librdkafka_gets_the_crc32_partitioner_acks_idempotence_and_codec(
    monkeypatch: pytest.MonkeyPatch, unsafe: bool
) -> None:
    monkeypatch.setattr(confluent_kafka, "Producer", RecordingProducer)
    RecordingProducer.made.clear()
    settings = ProducerSettings(ProducerClient.CONFLUENT, Compression.LZ4, unsafe)

    async def produce_one() -> None:
        producer = make_producer(settings, "127.0.0.1:1", "ingestor", **TUNING)
        assert isinstance(producer, ConfluentProducer)
        await producer.start()
        delivered = await producer.send("topic", value=b"v", key=b"BTCUSDT")
        await asyncio.wait_for(delivered, 5)
        await producer.flush()
        await producer.stop()

    asyncio.run(produce_one())
    (config,) = RecordingProducer.made
    assert config.pop("logger").name == "librdkafka"
    assert config == {
        "bootstrap.servers": "127.0.0.1:1",
        "client.id": "ingestor",
        "acks": "1" if unsafe else "all",
        "enable.idempotence": not unsafe,
        "compression.type": "lz4",
        "partitioner": "consistent_random",
        "linger.ms": 5,
        "batch.size": 262_144,
    }


def test_librdkafka_accepts_the_configuration_it_is_given() -> None:
    """The real client parses every property (an unknown name or value raises at construction)."""
    for unsafe in (False, True):
        for compression in Compression:
            settings = ProducerSettings(ProducerClient.CONFLUENT, compression, unsafe)
            config = {"bootstrap.servers": "127.0.0.1:1", **settings.confluent_config(**TUNING)}
            confluent_kafka.Producer(config).purge()


def test_a_librdkafka_producer_that_reaches_no_broker_fails_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """As aiokafka's start() does, so the ingestor's start loop retries until Kafka is there."""
    monkeypatch.setattr(producers, "START_TIMEOUT_S", 1.0)

    async def start() -> None:
        await ConfluentProducer({"bootstrap.servers": "127.0.0.1:1"}).start()

    with pytest.raises(confluent_kafka.KafkaException):
        asyncio.run(start())
