from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from pipeline_check.clock import Clock
from pipeline_check.messages import TradeFactory
from pipeline_check.tags import RunId
from pipeline_check.trace import TraceBook

INF = math.inf
STAGES = ("kafka", "consumer", "iceberg", "api")
OFFSET = 1_750_000_000.0
RUN = RunId(4242)


def new_book(count: int = 4, stages: tuple[str, ...] = STAGES) -> TraceBook:
    return TraceBook(RUN, TradeFactory(RUN, seed=1, count=count, symbol="CANARYUSDT"), stages, Clock(offset=OFFSET))


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
    for stage, seen in TIMES.items():
        for seq, at in seen.items():
            b.seen(stage, seq, at)
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
    assert new_book(stages=stages).upstream(stage) == upstream


def test_summary(book: TraceBook) -> None:
    s = book.summary(offered_rate=1.0)
    assert (s.injected, s.delivered, s.lost) == (4, 2, 2)
    assert s.stuck == {"iceberg": [f"{RUN}#2"], "consumer": [f"{RUN}#3"]}
    # the smaller of (delivered - 1) over the 3 s injection span and the 1/s arrival rate
    assert s.throughput == pytest.approx(1 / 3)
    assert s.injection_seconds == pytest.approx(3.0)
    by_name = {st.name: st for st in s.stages}
    assert [st.reached for st in s.stages] == [4, 3, 3, 2]
    assert by_name["consumer"].upstream == "kafka"
    assert by_name["iceberg"].latency["max"] == pytest.approx(1.0)  # finite samples only
    assert by_name["api"].latency["n"] == 2
    assert by_name["api"].since_injection["p50"] == pytest.approx(2.0)
    m = book.measurements(s)
    assert set(m.latencies) == {*STAGES, "e2e"}
    assert m.latencies["e2e"].tolist() == pytest.approx([2.0, 2.0, INF, INF])
    assert m.counts["lost"] == 2
    assert m.throughput_samples == 2
    assert "1 stuck after iceberg; 1 stuck after consumer" in m.notes["lost"]


def next_batch(at: float, interval: float = 0.5) -> float:
    """When a pipeline committing every ``interval`` seconds delivers what it holds at ``at``."""
    return (at // interval + 1) * interval


@pytest.mark.parametrize(
    ("arrival", "expected"),
    [
        # keeps up in 0.5 s batches: steps must not read as a slower rate, whatever their phase
        (lambda seq, t: next_batch(t + 0.3), 50.0),
        (lambda seq, t: next_batch(t + 0.05), 50.0),
        # keeps up, but the last tenth is seen 0.25 s late (a probe's interval grew): end points
        # would say 44/s on this 2 s run
        (lambda seq, t: t + 0.3 + (0.25 if seq >= 90 else 0.0), 50.0),
        # keeps up, but one batch in the middle stalls for 1.5 s: a transient, not a slow pipeline
        (lambda seq, t: next_batch(t + 0.3) + (1.5 if 40 <= seq < 50 else 0.0), 50.0),
        # falls behind: one canary every 40 ms reaches the end
        (lambda seq, t: 0.3 + 2 * t, 25.0),
        # falls behind in batches: takes 40 canaries a second, commits every 0.5 s
        (lambda seq, t: next_batch(seq / 40 + 0.1), 40.0),
    ],
)
def test_throughput_of_batched_late_stalled_and_lagging_deliveries(
    arrival: Callable[[int, float], float], expected: float
) -> None:
    b = new_book(count=100, stages=("iceberg",))
    for seq in range(100):
        b.inject(seq, seq / 50)  # offered 50/s over 2 s
        b.seen("iceberg", seq, arrival(seq, seq / 50))
    summary = b.summary(50.0)
    assert summary.throughput == pytest.approx(expected, rel=0.02)
    assert summary.delivery_steps >= 3


def test_throughput_rests_on_distinct_arrival_times() -> None:
    b = new_book(count=100, stages=("iceberg",))
    for seq in range(100):
        b.inject(seq, seq / 50)
        b.seen("iceberg", seq, 35.0 if seq < 60 else 70.0)  # a consumer that flushes every 35 s
    summary = b.summary(50.0)
    assert summary.delivery_steps == 2  # too few to tell a rate: the SLA engine fails it
    assert b.measurements(summary).delivery_steps == 2


def test_never_reached_anything_is_stuck_at_source() -> None:
    b = new_book(count=3, stages=("kafka",))
    for seq in range(3):
        b.inject(seq, float(seq))
    b.seen("kafka", 1, 1.5)
    s = b.summary(1.0)
    assert s.stuck == {"source": [f"{RUN}#0", f"{RUN}#2"]}
    assert s.delivered == 1
    assert s.throughput == 0.0  # one delivery makes no rate


def test_empty_run() -> None:
    s = new_book().summary(10.0)
    assert (s.injected, s.delivered, s.lost, s.throughput, s.out_of_order) == (0, 0, 0, 0.0, 0)
    assert all(st.latency == {} for st in s.stages)


def test_source_reported_time_is_kept_beside() -> None:
    b = new_book(count=1)
    b.inject(0, 10.0)
    b.seen("kafka", 0, 10.5, source_ms=(10.3 + OFFSET) * 1000)  # the broker stamped it 0.3 s after sending
    stage = b.summary(1.0).stages[0]
    assert stage.latency["p50"] == pytest.approx(0.5)
    assert stage.source_latency["p50"] == pytest.approx(0.3, abs=1e-3)


def test_duplicates_and_views() -> None:
    b = new_book(count=3)
    for seq in range(3):
        b.inject(seq, 0.0)
    assert b.seen("kafka", 0, 1.0) is True
    assert b.seen("kafka", 0, 2.0) is False  # a second copy
    assert b.seen_in_view("api", {0: 3, 1: 1}, 5.0) == 2
    assert b.seen_in_view("api", {0: 2, 1: 1, 2: 1}, 6.0) == 1  # the same rows queried again
    assert b.copies("api").tolist() == [3, 1, 1]  # the most copies one view held, not the sum
    assert b.first_seen("api").tolist() == [5.0, 5.0, 6.0]
    s = b.summary(1.0)
    extra = {st.name: (st.duplicated, st.extra_copies) for st in s.stages}
    assert extra["kafka"] == (1, 1)
    assert extra["api"] == (1, 2)
    assert s.duplicates == 2  # the worst stage, not a sum over stages


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
    for seq in range(4):
        b.inject(seq, float(seq))
    for seq, (partition, offset) in placement.items():
        b.seen("kafka", seq, 10.0 - seq, ref=offset, partition=partition)  # arrival times say nothing here
    assert b.summary(1.0).out_of_order == out_of_order


def test_out_of_order_without_kafka_uses_first_seen() -> None:
    b = new_book(stages=("iceberg", "api"))
    for seq in range(4):
        b.inject(seq, float(seq))
    for seq, at in {0: 5.0, 1: 4.0, 2: 6.0, 3: 7.0}.items():
        b.seen("iceberg", seq, at)
    assert b.summary(1.0).out_of_order == 1


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
    assert b.summary(1.0).unexpected == 2


def test_corrupted_via_diff() -> None:
    b = new_book(count=2)
    sent = [b.inject(seq, 1.0).to_dict() for seq in range(2)]
    fields = {"price": "p:decimal", "side": "m:side", "trade_time": "T:ms", "symbol": "s"}

    def held(seq: int, **changes: object) -> dict[str, object]:
        ok = {"price": sent[seq]["p"] + "000", "side": "sell" if sent[seq]["m"] else "buy"}
        return ok | {"trade_time": sent[seq]["T"], "symbol": "CANARYUSDT"} | changes

    b.diff("iceberg", 0, held(0), fields)
    assert b.summary(1.0).corrupted == 0
    b.diff("iceberg", 1, held(1, price="1.0", symbol="BTCUSDT"), fields)
    b.diff("api", 1, held(1, trade_time=sent[1]["T"] + 1), fields)
    s = b.summary(1.0)
    assert s.corrupted == 1  # canaries, not fields
    assert [(d.stage, d.field, d.tag) for d in s.diffs] == [
        ("iceberg", "price", RUN.tag(1)),
        ("iceberg", "symbol", RUN.tag(1)),
        ("api", "trade_time", RUN.tag(1)),
    ]
    assert s.diffs[0].actual == "'1.0'"
    assert s.diffs[0].expected == repr(sent[1]["p"])
