"""The reference pipeline's Kafka side, shown from outside on the local stack: the codec of each record batch as the
broker stored it (its log segments, read byte by byte), where each keyed record landed, the Kafka position the
consumer writes beside each row, and the second client family (confluent-kafka / librdkafka) on 40 partitions."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.partitioner import murmur2

from pipeline_check.pytest_plugin import PipelineStack
from pipeline_check.stack.local import LocalStack
from tests.e2e.helpers import feed, table_rows, trades, wait_for
from tests.e2e.test_reference_pipeline import symbol

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RAW = "market.trades.raw"
# the codec bits of a record batch's attributes (Kafka's record batch format v2)
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def batch_codecs(run_dir: Path, topic: str, partition: int) -> Iterator[tuple[int, int, str]]:
    """(first offset, last offset, codec) of each record batch in the broker's log of the partition."""
    for segment in sorted((run_dir / "kafka" / "data" / f"{topic}-{partition}").glob("*.log")):
        data = segment.read_bytes()
        at = 0
        while at + 61 <= len(data):  # a v2 batch header is 61 bytes
            base, length = struct.unpack_from(">qi", data, at)
            if length <= 0 or at + 12 + length > len(data):
                break  # the tail of a segment still being written
            (attributes,) = struct.unpack_from(">h", data, at + 21)
            (last_delta,) = struct.unpack_from(">i", data, at + 23)
            yield base, base + last_delta, CODECS[attributes & 0x07]
            at += 12 + length


def codecs_of(run_dir: Path, records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
    """The codecs of the batches holding ``records``."""
    found = set()
    for tp in {(r.topic, r.partition) for r in records}:
        batches = list(batch_codecs(run_dir, *tp))
        for r in (r for r in records if (r.topic, r.partition) == tp):
            (codec,) = [c for first, last, c in batches if first <= r.offset <= last]
            found.add(codec)
    return found


async def keyed_records(
    bootstrap: str, topic: str, keys: set[bytes], count: int, timeout: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` (read from the beginning) whose key is one of ``keys``, until ``count`` are found."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < count:
            batches = await consumer.getmany(timeout_ms=200)
            found += [r for records in batches.values() for r in records if r.key in keys]
    finally:
        await consumer.stop()
    assert len(found) == count, f"{len(found)} of {count} records keyed {sorted(keys)[:3]}... in {topic}"
    return found


def java_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client (and aiokafka) picks for ``key``: murmur2, sign bit cleared."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def interleaved(symbols: list[str], per_symbol: int) -> list[dict[str, Any]]:
    """``per_symbol`` trades of each symbol, sent round robin over the symbols, ids unique across them."""
    lists = [trades(s, per_symbol, first_id=10**12 + i * per_symbol) for i, s in enumerate(symbols)]
    return [lists[i][k] for k in range(per_symbol) for i in range(len(symbols))]


def send(stack: LocalStack, sent: list[dict[str, Any]], *, at: int | None = None, kill: str | None = None) -> None:
    async def crash_and_revive() -> None:
        assert kill is not None
        await asyncio.to_thread(stack.kill, kill)  # SIGKILL: no flush, no commit
        await asyncio.to_thread(stack.revive, kill)

    async def stream() -> None:
        async with feed(stack.spec.ports["feed"]) as f:
            await f.send(sent, rate=2000, at=at, action=crash_and_revive if kill else None)

    asyncio.run(stream())


def rows_of(exports: dict[str, str], symbols: list[str]) -> list[dict[str, Any]]:
    return [row for s in symbols for row in table_rows(exports, s)]


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip", "none"])
def test_the_ingestor_writes_batches_in_its_codec_and_the_consumer_reads_them(
    local_stack: LocalStack, pipeline_stack: PipelineStack, codec: str
) -> None:
    exports = pipeline_stack.exports
    if codec != "lz4":  # lz4 is the stack's own setting: every other e2e run reads lz4 batches too
        local_stack.restart("ingestor", env={"KAFKA_COMPRESSION": codec})
    symbols = [symbol() for _ in range(3)]
    sent = interleaved(symbols, 100)
    send(local_stack, sent)
    records = asyncio.run(keyed_records(exports["PC_KAFKA_BOOTSTRAP"], RAW, {s.encode() for s in symbols}, len(sent)))
    assert codecs_of(local_stack.spec.run_dir, records) == {codec}
    rows = wait_for(
        lambda: (rows := rows_of(exports, symbols)) and len(rows) >= len(sent) and rows, 30, f"{len(sent)} rows"
    )
    assert sorted(r["trade_id"] for r in rows) == sorted(t["t"] for t in sent)


def test_each_row_carries_its_kafka_partition_and_offset(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    """The healthy shape for judging order per partition: an Iceberg order column holding the Kafka offset."""
    exports = pipeline_stack.exports
    by_partition: dict[int, str] = {}
    while len(by_partition) < 3:  # a symbol on each partition (the reference ingestor keys by symbol)
        candidate = symbol()
        by_partition.setdefault(java_partition(candidate.encode(), 3), candidate)
    symbols = list(by_partition.values())
    sent = interleaved(symbols, 200)
    send(local_stack, sent, at=300, kill="consumer")  # resumed from the table's offsets map mid-stream
    records = asyncio.run(keyed_records(exports["PC_KAFKA_BOOTSTRAP"], RAW, {s.encode() for s in symbols}, len(sent)))
    where = {json.loads(r.value)["t"]: (r.partition, r.offset) for r in records}
    rows = wait_for(
        lambda: (rows := rows_of(exports, symbols)) and len(rows) >= len(sent) and rows, 60, f"{len(sent)} rows"
    )
    assert len(rows) == len(sent)
    assert {r["trade_id"]: (r["kafka_partition"], r["kafka_offset"]) for r in rows} == where
    assert len({p for p, _ in where.values()}) == 3
    for partition in range(3):  # within a partition the offsets follow the send order
        mine = [r for r in sorted(rows, key=lambda r: r["trade_time"]) if r["kafka_partition"] == partition]
        assert [r["kafka_offset"] for r in mine] == sorted(r["kafka_offset"] for r in mine)
    # across partitions they do not: offsets of different partitions are not comparable
    by_offset = [r["trade_id"] for r in sorted(rows, key=lambda r: (r["kafka_offset"], r["kafka_partition"]))]
    assert by_offset != [t["t"] for t in sent]


def test_a_librdkafka_producer_on_40_partitions_lands_each_key_by_crc32_lz4_compressed_and_exactly_once(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    topic = "market.trades.raw40"
    env = {"RAW_TOPIC": topic, "RAW_TOPIC_PARTITIONS": "40"}
    local_stack.restart("consumer", env=env)  # creates the topic with 40 partitions
    local_stack.restart("ingestor", env={**env, "PRODUCER_CLIENT": "confluent"})
    health = httpx.get(f"http://127.0.0.1:{local_stack.spec.ports['ingestor']}/health", timeout=5).json()
    assert health["producer"] == "confluent-kafka (librdkafka), lz4 compression, acks=all, idempotent"
    symbols = [symbol() for _ in range(120)]
    sent = interleaved(symbols, 10)
    send(local_stack, sent, at=600, kill="consumer")
    records = asyncio.run(
        keyed_records(exports["PC_KAFKA_BOOTSTRAP"], topic, {s.encode() for s in symbols}, len(sent), timeout=60)
    )
    landed = {r.key: r.partition for r in records}
    assert all(landed[r.key] == r.partition for r in records)  # a key keeps its partition
    # librdkafka's consistent_random: CRC32 of the key modulo the partition count
    assert landed == {s.encode(): zlib.crc32(s.encode()) % 40 for s in symbols}
    assert sum(landed[k] != java_partition(k, 40) for k in landed) > 60  # not the Java client's murmur2
    assert len(set(landed.values())) >= 30  # 120 keys over 40 partitions: ~2 are left empty
    assert codecs_of(local_stack.spec.run_dir, records) == {"lz4"}
    rows = wait_for(
        lambda: (rows := rows_of(exports, symbols)) and len(rows) >= len(sent) and rows, 90, f"{len(sent)} rows"
    )
    wait_for(lambda: local_stack.health("consumer").ok, 10, "consumer healthy")
    rows = rows_of(exports, symbols)
    assert len(rows) == len(sent), f"{len(rows) - len(sent)} extra rows"
    assert sorted(r["trade_id"] for r in rows) == sorted(t["t"] for t in sent)
    assert {(r["symbol"], r["kafka_partition"]) for r in rows} == {(s, landed[s.encode()]) for s in symbols}
