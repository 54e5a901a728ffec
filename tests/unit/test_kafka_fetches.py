"""The Kafka probe's fetch tap on real record batches (aiokafka's own builder and parser): batches without the
run's tag digits are emptied over the same offsets, everything else passes as it was, and the log ends the
answers report date what the probe reads later."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from pipeline_check.backends.kafka.fetches import FetchTap, LogEnds, hollow, needle_of
from pipeline_check.canary.tags import RunId
from pipeline_check.verdict.probe_load import ProbeLoad

RUN = RunId(31_337_000)
NEEDLE = needle_of(RUN.lo, RUN.hi)
NONE, GZIP, LZ4, ZSTD = 0, 1, 3, 4


def batch(base: int, values: list[bytes], compression: int = LZ4) -> bytes:
    """One v2 batch of ``values`` at offsets ``base..``, as a producer writes it."""
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_750_000_000_000 + i, key=b"BTCUSDT", value=value, headers=[])
    data = bytearray(builder.build())
    data[0:8] = struct.pack(">q", base)  # the broker sets the base offset (outside the CRC)
    return bytes(data)


def trade(trade_id: int) -> bytes:
    return json.dumps({"e": "trade", "s": "BTCUSDT", "t": trade_id, "p": "65000.10000000", "q": "0.001"}).encode()


def read(records: bytes) -> tuple[list[tuple[int, bytes]], list[int], bool]:
    """What aiokafka parses out of a record set: (offset, value) per record, each batch's next offset, CRCs ok."""
    memory = MemoryRecords(records)
    found, nexts, crcs = [], [], True
    while memory.has_next():
        b = memory.next_batch()
        crcs = crcs and b.validate_crc()
        nexts.append(b.next_offset)
        found += [(r.offset, r.value) for r in b]
    return found, nexts, crcs


def test_the_needle_is_the_digits_every_tag_of_the_run_begins_with() -> None:
    assert len(NEEDLE) >= 10
    assert str(RUN.lo).encode().startswith(NEEDLE) and str(RUN.hi).encode().startswith(NEEDLE)
    assert not str(RunId(RUN.value + 1).lo).encode().startswith(NEEDLE + b"x")
    assert needle_of(99, 100) == b""  # no common digits: no filter


@pytest.mark.parametrize("compression", [NONE, GZIP, LZ4, ZSTD])
def test_batches_without_a_canary_are_emptied_over_the_same_offsets(compression: int) -> None:
    background = [trade(1_000_000 + i) for i in range(50)]
    canary = trade(RUN.tag(7))
    records = (
        batch(100, background, compression)
        + batch(150, [*background[:10], canary, *background[:9]], compression)
        + batch(170, background, compression)
    )
    kept, batches, emptied = hollow(records, NEEDLE)
    assert (batches, emptied) == (3, 2)
    assert len(kept) < len(records) // 2 or compression != NONE
    found, nexts, crcs = read(kept)
    assert crcs
    assert nexts == [150, 170, 220]  # the consumer moves past the emptied batches' offsets
    assert [offset for offset, _ in found] == list(range(150, 170))
    assert (160, canary) in found
    original, original_nexts, _ = read(records)
    assert original_nexts == nexts and len(original) == 120


def test_a_set_without_canaries_is_returned_untouched_when_nothing_is_emptied() -> None:
    records = batch(0, [trade(RUN.tag(1))], LZ4)
    assert hollow(records, NEEDLE) == (records, 1, 0)


def test_a_partial_batch_at_the_end_passes_as_it_was() -> None:
    whole = batch(0, [trade(5)] * 10)
    cut = batch(10, [trade(6)] * 10)[:-7]  # a fetch's size limit cut the last batch
    kept, batches, emptied = hollow(whole + cut, NEEDLE)
    assert (batches, emptied) == (1, 1)
    assert kept.endswith(cut)


def test_log_ends_date_an_offset_by_the_first_answer_past_it() -> None:
    ends = LogEnds()
    ends.observe(0, 1.0, 10)
    ends.observe(0, 2.0, 10)  # no news: not kept
    ends.observe(0, 3.0, 25)
    ends.observe(0, 4.0, 40)
    assert ends.known(0, 5) == (1.0, 1.0)
    assert ends.known(0, 30) == (4.0, 3.0)  # in the log by 4.0, not yet at 3.0
    assert ends.known(0, 40) is None
    assert ends.known(1, 0) is None


class Client:
    """A consumer client stand-in: answers each request with what the test queued."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        return self.answers.pop(0)


class Fetch:
    API_KEY = 1


class Answer:
    def __init__(self, topics: list[Any]) -> None:
        self.topics = topics


def test_the_tap_counts_paces_dates_and_empties() -> None:
    load = ProbeLoad()
    turns: list[float] = []
    now = [10.0]
    answers: list[tuple[float, float]] = []

    async def turn() -> None:
        turns.append(now[0])

    tap = FetchTap(load, turn, lambda: now[0], NEEDLE, on_fetch=lambda sent, got: answers.append((sent, got)))
    background = batch(0, [trade(1)] * 20)
    canary = batch(20, [trade(RUN.tag(3))])
    answer = Answer([("raw", [(0, 0, 21, background + canary), (1, 6, -1, b"")])])
    consumer = type("Consumer", (), {})()
    consumer._client = Client([answer, object()])
    tap.install(consumer)

    async def go() -> None:
        assert await consumer._client.send(0, Fetch()) is answer
        await consumer._client.send(0, object())  # a metadata or offsets request

    asyncio.run(go())
    assert turns == [10.0, 10.0] and answers == [(10.0, 10.0)]  # every request waits its turn
    calls, nbytes = load.snapshot()
    assert calls == {"fetches": 1, "admin": 1}
    assert nbytes["fetches"] == len(background) + len(canary)
    assert (tap.batches, tap.emptied) == (2, 1)
    found, _, _ = read(answer.topics[0][1][0][-1])
    assert [offset for offset, _ in found] == [20]
    assert tap.ends.known(0, 20) == (10.0, 10.0)
    assert tap.ends.known(1, 0) is None  # an error answer reports no log end
