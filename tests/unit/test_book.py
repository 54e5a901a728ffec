"""The trace book and the run summary built from it: latencies per hop, where lost canaries stopped,
copies in streams and views, retractions, coverage, ordering, fidelity, throughput."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.book import Ref, TraceBook
from pipeline_check.verdict.measurements import measurements
from pipeline_check.verdict.summary import InjectionStats, RunSummary, summarise
from tests.unit.conftest import route_of

INF = math.inf
STAGES = ("kafka", "consumer", "iceberg", "api")
OFFSET = 1_750_000_000.0
RUN = RunId(4242)


def new_book(count: int = 4, stages: tuple[str, ...] = STAGES) -> TraceBook:
    factory = TradeFactory(RUN, seed=1, count=count, symbols=("CANARYUSDT",))
    return TraceBook(RUN, factory, route_of(stages), Clock(offset=OFFSET))


def summary_of(book: TraceBook, rate: float = 1.0, **kw: object) -> RunSummary:
    return summarise(book, InjectionStats(book.injected, 0, rate, rate, 0.0, 0), settle_s=2.0, **kw)  # type: ignore[arg-type]


def seen(book: TraceBook, stage: str, seq: int, at: float, **kw: object) -> bool:
    return book.seen(stage, RUN.tag(seq), at, **kw)  # type: ignore[arg-type]


# seq -> first-seen time per stage; injected at 0, 1, 2, 3.
#   seq 2 skips the consumer and stops at iceberg; seq 3 stops at the consumer.
TIMES = {
    "kafka": {0: 0.5, 1: 1.5, 2: 2.5, 3: 3.5},
    "consumer": {0: 0.7, 1: 1.9, 3: 3.6},
    "iceberg": {0: 1.5, 1: 2.0, 2: 2.7},
    "api": {0: 2.0, 1: 3.0},
}


@pytest.fixture
def book() -> TraceBook:
    b = new_book()
    for seq in range(4):
        b.inject(seq, float(seq))
    for stage, times in TIMES.items():
        for seq, at in times.items():
            seen(b, stage, seq, at)
    return b


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("kafka", [0.5, 0.5, 0.5, 0.5]),  # from injection
        ("consumer", [0.2, 0.4, INF, 0.1]),  # from kafka
        ("iceberg", [1.0, 0.5, 0.2, INF]),  # from kafka too, not from the consumer's commit
        ("api", [0.5, 1.0, INF]),  # from iceberg; seq 3 never reached iceberg, so has no api hop
    ],
)
def test_hop_latencies(book: TraceBook, stage: str, expected: list[float]) -> None:
    assert book.hop_latencies(stage).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [("kafka", [0.5, 0.5, 0.5, 0.5]), ("iceberg", [1.5, 1.0, 0.7, INF]), ("api", [2.0, 2.0, INF, INF])],
)
def test_since_injection(book: TraceBook, stage: str, expected: list[float]) -> None:
    assert book.latencies_since_injection(stage).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("stages", "stage", "upstream"),
    [
        (STAGES, "kafka", "source"),
        (STAGES, "consumer", "kafka"),
        (STAGES, "iceberg", "kafka"),
        (STAGES, "api", "iceberg"),
        (("kafka", "api"), "api", "kafka"),
        (("iceberg", "api"), "iceberg", "source"),
        (("api",), "api", "source"),
        (("kafka", "consumer", "api"), "api", "kafka"),
    ],
)
def test_upstream_skips_unconfigured_stages(stages: tuple[str, ...], stage: str, upstream: str) -> None:
    assert route_of(stages).upstream[stage] == upstream


def test_summary(book: TraceBook) -> None:
    s = summary_of(book)
    assert (s.injected, s.delivered, s.lost, s.final) == (4, 2, 2, "api")
    assert s.stuck == {"iceberg": [f"{RUN}#2"], "consumer": [f"{RUN}#3"]}
    by_name = s.stage
    assert [st.reached for st in s.stages] == [4, 3, 3, 2]
    assert by_name["consumer"].upstream == "kafka"
    # undelivered canaries count as infinitely late, in figures as in checks
    assert by_name["iceberg"].latency["max"] == INF
    assert by_name["api"].latency["n"] == 3
    assert by_name["api"].since_injection["p50"] == pytest.approx(2.0)
    assert s.e2e["p99"] == INF
    # delivered (seq 0 and 1) but not seen before the last stage: seq 0 and 1 reached every stage
    assert s.incomplete == {"kafka": 0, "consumer": 0, "iceberg": 0}
    m = measurements(s, book)
    assert set(m.latencies) == {*STAGES, "e2e"}
    assert m.latencies["e2e"].tolist() == pytest.approx([2.0, 2.0, INF, INF])
    assert m.tallies["lost"].count == 2
    assert "1 stuck after iceberg; 1 stuck after consumer" in m.tallies["lost"].detail


def test_incomplete_names_the_stage_that_missed_delivered_canaries() -> None:
    b = new_book(count=3)
    for seq in range(3):
        b.inject(seq, float(seq))
        for stage in ("kafka", "iceberg", "api"):
            seen(b, stage, seq, seq + 1.0)
    seen(b, "consumer", 0, 1.5)  # the group committed past one canary only
    s = summary_of(b)
    assert s.incomplete == {"kafka": 0, "consumer": 2, "iceberg": 0}
    tally = measurements(s, b).tallies["incomplete"]
    assert tally.count == 2 and "consumer: 1 of 3 committed" in tally.detail


def test_incomplete_counts_canaries_not_stage_misses() -> None:
    """A canary missed by two earlier stages is one incomplete canary: the count never exceeds the delivered."""
    b = new_book(count=3)
    for seq in range(3):
        b.inject(seq, float(seq))
        for stage in ("kafka", "api"):
            seen(b, stage, seq, seq + 1.0)
    seen(b, "consumer", 0, 1.5)
    seen(b, "iceberg", 0, 1.6)
    s = summary_of(b)
    assert s.incomplete == {"kafka": 0, "consumer": 2, "iceberg": 2}
    tally = measurements(s, b).tallies["incomplete"]
    assert (tally.count, tally.out_of) == (2, 3)


def test_never_reached_anything_is_stuck_at_source() -> None:
    b = new_book(count=3, stages=("kafka",))
    for seq in range(3):
        b.inject(seq, float(seq))
    seen(b, "kafka", 1, 1.5)
    s = summary_of(b)
    assert s.stuck == {"source": [f"{RUN}#0", f"{RUN}#2"]}
    assert s.delivered == 1
    assert s.throughput.delivered == 0.0  # one delivery makes no rate


def test_empty_run() -> None:
    s = summary_of(new_book())
    assert (s.injected, s.delivered, s.lost, s.throughput.delivered) == (0, 0, 0, 0.0)
    assert all(st.latency == {} for st in s.stages)


def test_source_reported_time_is_kept_beside() -> None:
    b = new_book(count=1)
    b.inject(0, 10.0)
    seen(b, "kafka", 0, 10.5, source_ms=(10.3 + OFFSET) * 1000)  # the broker stamped it 0.3 s after sending
    stage = summary_of(b).stages[0]
    assert stage.latency["p50"] == pytest.approx(0.5)
    assert stage.source_latency["p50"] == pytest.approx(0.3, abs=1e-3)


def test_copies_in_streams_and_views_and_retractions() -> None:
    b = new_book(count=3)
    for seq in range(3):
        b.inject(seq, 0.0)
    assert seen(b, "kafka", 0, 1.0) is True
    assert seen(b, "kafka", 0, 2.0) is False  # a second copy in a stream
    assert seen(b, "api", 0, 5.0, copies=3) and seen(b, "api", 1, 5.0, copies=1)
    assert not seen(b, "api", 0, 6.0, copies=2)  # the same rows looked at again: a view, not a sum
    assert seen(b, "api", 2, 6.0, copies=1)
    assert b.copies("api").tolist() == [3, 1, 1]  # the most copies one view held
    assert b.first_seen("api").tolist() == [5.0, 5.0, 6.0]
    assert not seen(b, "api", 1, 7.0, copies=0)  # gone from the view
    s = summary_of(b)
    by = s.stage
    assert (by["kafka"].duplicated, by["kafka"].extra_copies) == (1, 1)
    assert (by["api"].duplicated, by["api"].extra_copies, by["api"].retracted) == (1, 2, 1)
    assert s.duplicates == 1  # canaries duplicated at some stage: seq 0 at kafka and api
    assert s.retracted == 1
    seen(b, "api", 1, 8.0, copies=1)  # back again: still retracted, restored after 1 s
    restored = summary_of(b)
    assert restored.retracted == 1 and restored.stage["api"].restored == 1
    assert [r.text for r in restored.retractions] == ["retracted, restored after 1.0s"]


def test_coverage_per_shard() -> None:
    b = new_book(count=4, stages=("kafka", "api"))
    b.declare_shards("kafka", [0, 1, 2])
    for seq in range(4):
        b.inject(seq, float(seq))
        seen(b, "kafka", seq, seq + 0.1, ref=Ref(seq % 2, seq))  # nothing on partition 2
        if seq != 3:
            seen(b, "api", seq, seq + 1.0)
    s = summary_of(b)
    shards = [(c.shard, c.seen, c.delivered) for c in s.stage["kafka"].shards]
    assert shards == [(0, 2, 2), (1, 2, 1), (2, 0, 0)]
    coverage = measurements(s, b).coverage
    assert (coverage.count, coverage.out_of) == (1, 3) and "kafka partition 2" in coverage.detail


@pytest.mark.parametrize(
    ("placement", "out_of_order"),
    [
        ({0: (0, 10), 1: (0, 11), 2: (0, 12), 3: (0, 13)}, 0),
        ({0: (0, 10), 1: (0, 12), 2: (0, 11), 3: (0, 13)}, 1),  # seq 2 written before seq 1
        ({0: (0, 13), 1: (0, 10), 2: (0, 11), 3: (0, 12)}, 3),  # seq 0 last: the three after it overtook it
        ({0: (0, 10), 1: (1, 5), 2: (0, 11), 3: (1, 6)}, 0),  # offsets compare within a partition only
        ({0: (0, 10), 1: (1, 5), 3: (0, 9)}, 1),  # seq 2 never arrived
    ],
)
def test_out_of_order_by_offset(placement: dict[int, tuple[int, int]], out_of_order: int) -> None:
    b = new_book()
    b.declare_ordered("kafka")
    for seq in range(4):
        b.inject(seq, float(seq))
    for seq, (partition, offset) in placement.items():
        seen(b, "kafka", seq, 10.0 - seq, ref=Ref(partition, offset))  # arrival times say nothing here
    assert summary_of(b).out_of_order == out_of_order


def test_ordering_is_not_applicable_where_the_validator_made_the_order() -> None:
    b = new_book(stages=("kafka", "iceberg"))
    b.declare_ordered("kafka")
    for seq in range(4):
        b.inject(seq, float(seq))
        seen(b, "kafka", seq, seq + 0.1, ref=Ref(0, 3 - seq))
    s = summary_of(b, validator_ordered={"kafka"})
    assert (s.out_of_order, s.order_stages) == (None, [])
    assert measurements(s, b).tallies["out_of_order"].not_applicable
    assert summary_of(b).out_of_order == 3  # judged when the pipeline made that order


def test_unexpected_and_foreign_tags() -> None:
    b = new_book(count=8)
    for seq in (0, 1, 3):
        b.inject(seq, 0.0)
    assert b.seq_of(RUN.tag(1)) == 1
    assert b.seq_of(str(RUN.tag(3))) == 3
    assert b.seq_of(np.int64(RUN.tag(0))) == 0
    assert b.seq_of(RUN.tag(2)) is None  # a gap: never sent
    assert b.seq_of(RUN.tag(7)) is None  # beyond what was sent
    assert b.seq_of(RunId(4241).tag(0)) is None  # an earlier run's canary
    assert b.seq_of(RunId(4243).tag(5)) is None
    assert b.seq_of(12_345) is None  # an ordinary trade id
    assert b.seq_of("not a number") is None
    assert (b.unexpected, b.foreign) == (2, 2)
    assert summary_of(b).unexpected == 2


def test_corrupted_via_diff() -> None:
    b = new_book(count=2)
    sent = [b.inject(seq, 1.0).to_dict() for seq in range(2)]
    fields = {"price": "p:decimal", "side": "m:side", "trade_time": "T:ms", "symbol": "s"}

    def held(seq: int, **changes: object) -> dict[str, object]:
        ok = {"price": sent[seq]["p"] + "000", "side": "sell" if sent[seq]["m"] else "buy"}
        return ok | {"trade_time": sent[seq]["T"], "symbol": "CANARYUSDT"} | changes

    assert not summary_of(b).compared
    b.diff("iceberg", RUN.tag(0), held(0), fields)
    assert summary_of(b).corrupted == 0 and summary_of(b).compared
    b.diff("iceberg", RUN.tag(1), held(1, price="1.0", symbol="BTCUSDT"), fields)
    b.diff("api", RUN.tag(1), held(1, trade_time=sent[1]["T"] + 1), fields)
    s = summary_of(b)
    assert s.corrupted == 1  # canaries, not fields
    assert [(d.stage, d.field, d.tag) for d in s.diffs] == [
        ("iceberg", "price", RUN.tag(1)),
        ("iceberg", "symbol", RUN.tag(1)),
        ("api", "trade_time", RUN.tag(1)),
    ]
    assert s.diffs[0].actual == "'1.0'"
    assert s.diffs[0].expected == repr(sent[1]["p"])
