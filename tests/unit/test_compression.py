"""Compressed record batches: every codec decodes, and a codec this install cannot decompress (its library made
unavailable here) is a one-line exit-2 error naming the stage's topic setting, never an internal error."""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka.codec
import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from pipeline_check.backends.kafka.compression import producer_codec
from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.backends.kafka.topic_probe import KafkaTopicProbe, KafkaTopicSettings
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.canary.tags import RunId
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError, ExitCode

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TP = TopicPartition("market.trades.raw", 0)
RUN = RunId.new()


def batch(codec: str, *values: bytes) -> bytes:
    """A record batch as a producer of ``codec`` writes it."""
    builder = DefaultRecordBatchBuilder(2, CODECS[codec], False, -1, -1, -1, 1 << 20)
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=1_700_000_000_000, key=b"CANARYUSDT", value=value, headers=[])
    return bytes(builder.build())


class Fetched:
    """A consumer whose fetch holds one batch, read as aiokafka's fetcher reads it (decompressed on iteration)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def getmany(self, *partitions: TopicPartition, **_: Any) -> dict[TopicPartition, list[Any]]:
        records = MemoryRecords(self.data)
        found: list[Any] = []
        while (next_batch := records.next_batch()) is not None:
            found += [_Record(r.offset, r.timestamp, r.key, r.value) for r in next_batch]
        return {TP: found}

    async def position(self, tp: TopicPartition) -> int:
        return 1

    def seek(self, *_: Any) -> None: ...
    def pause(self, *_: Any) -> None: ...
    def resume(self, *_: Any) -> None: ...


class _Record:
    def __init__(self, offset: int, timestamp: int, key: bytes | None, value: bytes | None) -> None:
        self.offset, self.timestamp, self.key, self.value, self.partition = offset, timestamp, key, value, 0


class Seen:
    def __init__(self) -> None:
        self.tags: list[object] = []

    def seen(self, stage: str, tag: object, at: float, **_: Any) -> bool:
        self.tags.append(tag)
        return True


def probe() -> tuple[KafkaTopicProbe, Seen]:
    seen = Seen()
    settings = KafkaTopicSettings(bootstrap="127.0.0.1:9", topic=TP.topic)
    ctx = ProbeContext("kafka", "source", Clock(), RUN, seen, lambda _: None)  # type: ignore[arg-type]
    return KafkaTopicProbe(settings, ctx), seen


@pytest.mark.parametrize("codec", list(CODECS))
def test_every_codec_is_read(codec: str) -> None:
    kafka, seen = probe()
    asyncio.run(kafka._read(Fetched(batch(codec, b'{"t": %d}' % RUN.tag(0)))))  # type: ignore[arg-type]
    assert seen.tags == [RUN.tag(0)]


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy"])
def test_a_codec_without_its_library_is_a_one_line_error_naming_the_stage(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = batch(codec, b'{"t": 1}')
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # as an install without cramjam
    kafka, _ = probe()
    with pytest.raises(ConfigError) as raised:
        asyncio.run(kafka._read(Fetched(data)))  # type: ignore[arg-type]
    message = str(raised.value)
    assert message.startswith("stages.kafka.topic='market.trades.raw' (str): holds record batches this install")
    assert f"Libraries for {codec} compression codec not found" in message and "install cramjam" in message
    assert "\n" not in message and raised.value.exit_code == ExitCode.USAGE_ERROR


def test_the_record_reader_of_the_samplers_names_the_stage_too(monkeypatch: pytest.MonkeyPatch) -> None:
    data = batch("lz4", b'{"t": 1}')
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    reader = RecordReader("127.0.0.1:9", TP.topic, "stages.raw.bootstrap")
    reader._consumer = Fetched(data)  # type: ignore[assignment]
    reader.partitions = [TP]
    with pytest.raises(ConfigError, match=r"^stages\.raw\.topic='market\.trades\.raw' \(str\): holds record batches"):
        asyncio.run(reader.read({TP: (0, 1)}))


def test_the_injector_refuses_a_codec_it_cannot_write(monkeypatch: pytest.MonkeyPatch) -> None:
    assert producer_codec("none", "source.compression") is None
    assert producer_codec("zstd", "source.compression") == "zstd"
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    assert producer_codec("gzip", "source.compression") == "gzip"  # the standard library's
    with pytest.raises(ConfigError, match=r"^source\.compression='lz4' \(str\): this install cannot compress lz4"):
        producer_codec("lz4", "source.compression")
