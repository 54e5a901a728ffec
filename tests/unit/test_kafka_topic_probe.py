"""The Kafka probe dates a canary by when it knew the canary was in the log: a probe that fell behind the
topic says so, widens its resolution, and never passes its own lag off as the pipeline's latency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipeline_check.backends.kafka.topic_probe import KafkaTopicProbe, KafkaTopicSettings
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.book import TraceBook
from tests.unit.conftest import route_of

RUN = RunId(31_337_001)


@dataclass
class Record:
    offset: int
    value: bytes
    timestamp: int = 1_750_000_000_000


def probe_of(book: TraceBook, notes: list[str]) -> KafkaTopicProbe:
    settings = KafkaTopicSettings(bootstrap="127.0.0.1:1", topic="raw")
    return KafkaTopicProbe(settings, ProbeContext("kafka", "source", book.clock, RUN, book, notes.append))


def book_of(count: int) -> TraceBook:
    book = TraceBook(
        RUN, TradeFactory(RUN, seed=1, count=count, symbols=("CANARYUSDT",)), route_of(("kafka",)), Clock()
    )
    for seq in range(count):
        book.inject(seq, 10.0)
    return book


def canary(book: TraceBook, seq: int) -> bytes:
    return book.factory.canary(seq, 1_750_000_000_000).to_json().encode()


def test_a_canary_read_late_is_dated_by_the_answer_that_showed_it_in_the_log() -> None:
    book, notes = book_of(3), []
    probe = probe_of(book, notes)
    ends = probe._tap.ends
    ends.observe(0, 10.5, 100)  # offsets up to 99 were in the log at 10.5
    ends.observe(0, 11.0, 200)  # up to 199 at 11.0
    probe._canary(0, Record(50, canary(book, 0)), now=10.55)  # read 50 ms after: keeping up
    probe._canary(0, Record(150, canary(book, 1)), now=14.0)  # read 3 s after the log end passed it
    probe._canary(0, Record(199, b'{"t": 1000}'), now=14.0)  # background: ignored
    first = book.first_seen("kafka")
    assert first[0] == 10.5  # the answer before the read had already shown offset 50
    assert first[1] == 11.0  # not 14.0: the probe's own 3 s are not the pipeline's
    assert book.reached("kafka") == 2
    asyncio.run(probe.finish())
    assert probe.resolution == 0.5  # widened: offset 150 entered the log between 10.5 and 11.0
    assert any("fell behind raw: 1 canaries read up to 3.00s after it knew they were in the log" in n for n in notes), (
        notes
    )


def test_a_probe_that_keeps_up_says_nothing() -> None:
    book, notes = book_of(1), []
    probe = probe_of(book, notes)
    probe._tap.ends.observe(0, 10.0, 10)
    probe._canary(0, Record(5, canary(book, 0)), now=10.01)
    asyncio.run(probe.finish())
    assert book.first_seen("kafka")[0] == 10.0 and probe.resolution == 0.0 and not notes
