"""The watch's canary ring and window on made-up times: when a canary counts as lost and where, what
probes are shown (open canaries only), bounded memory, tags that never repeat, and the window's figures
from the validation machinery."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_check.backends.probe import Ref
from pipeline_check.canary.tags import MAX_SEQ, RunId, parse
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.runs.watch.generation import GenerationRecorder
from pipeline_check.runs.watch.metrics import WatchMetrics
from pipeline_check.runs.watch.ring import CanaryRing, Generation
from pipeline_check.runs.watch.runner import generation_size, loss_deadline, ring_capacity
from pipeline_check.runs.watch.window import judge
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import parse_thresholds
from tests.unit.conftest import route_of

STAGES = ("kafka", "consumer", "iceberg", "api")
WALL = 1_750_000_000.0
LOST_AFTER = 5.0


def make_ring(capacity: int = 64, stages: tuple[str, ...] = STAGES) -> tuple[CanaryRing, Generation]:
    route = route_of(stages)
    run = RunId.new(WALL)
    metrics = WatchMetrics(route.stages, route.final, ["lost == 0", "e2e.p50 < 1s", "duplicates == 0"])
    content = TradeFactory(run, seed=3, count=capacity, symbols=("CANARYUSDT", "CANARYUSDT1"))
    ring = CanaryRing(capacity, route, content, Clock(offset=WALL), LOST_AFTER, metrics)
    return ring, Generation(run, ring.next_index)


def value(ring: CanaryRing, name: str, **labels: str) -> float:
    found = ring.metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def deliver(ring: CanaryRing, gen: Generation, tag: int, at: float, stages: tuple[str, ...] = STAGES) -> None:
    for i, stage in enumerate(stages):
        ring.seen(gen, stage, tag, at + 0.1 * (i + 1), ref=Ref(0, i))


def test_a_canary_is_lost_at_its_deadline_under_the_last_stage_it_reached() -> None:
    ring, gen = make_ring()
    tags = [ring.inject(gen, 10.0 + i).trade_id for i in range(3)]
    deliver(ring, gen, tags[0], 10.0)
    deliver(ring, gen, tags[1], 11.0, ("kafka", "consumer"))  # the table never got it
    # the third one only reaches kafka after its deadline: at the deadline it had reached nothing
    ring.close_due(10.0 + LOST_AFTER - 0.01)
    assert ring.in_flight == 3
    ring.close_due(12.0 + LOST_AFTER)
    ring.seen(gen, "kafka", tags[2], 12.0 + LOST_AFTER + 1)
    assert ring.in_flight == 0
    assert value(ring, "pipeline_check_canaries_lost_total", stage_reached="consumer") == 1
    assert value(ring, "pipeline_check_canaries_lost_total", stage_reached="source") == 1
    assert value(ring, "pipeline_check_canaries_lost_total", stage_reached="kafka") == 0
    assert value(ring, "pipeline_check_canaries_delivered_total", stage="api") == 1
    assert value(ring, "pipeline_check_canaries_delivered_total", stage="kafka") == 3  # late sightings count too
    assert value(ring, "pipeline_check_canaries_injected_total") == 3


def test_a_canary_seen_at_the_end_after_its_deadline_is_lost_and_then_late() -> None:
    ring, gen = make_ring()
    tag = ring.inject(gen, 0.0).trade_id
    ring.close_due(LOST_AFTER)
    deliver(ring, gen, tag, LOST_AFTER + 1)
    assert value(ring, "pipeline_check_canaries_lost_total", stage_reached="source") == 1
    assert value(ring, "pipeline_check_canaries_late_total") == 1
    assert value(ring, "pipeline_check_e2e_latency_seconds_count") == 1
    assert value(ring, "pipeline_check_e2e_latency_seconds_sum") == pytest.approx(LOST_AFTER + 1.4)


def test_latency_histograms_take_each_hop_from_its_upstream() -> None:
    ring, gen = make_ring()
    tag = ring.inject(gen, 100.0).trade_id
    ring.seen(gen, "kafka", tag, 100.25)
    ring.seen(gen, "iceberg", tag, 101.25)  # measured from kafka, like the trace book
    ring.seen(gen, "consumer", tag, 102.0)
    ring.seen(gen, "api", tag, 101.75)
    hop = "pipeline_check_stage_latency_seconds_sum"
    assert value(ring, hop, stage="kafka") == pytest.approx(0.25)
    assert value(ring, hop, stage="iceberg") == pytest.approx(1.0)
    assert value(ring, hop, stage="consumer") == pytest.approx(1.75)
    assert value(ring, hop, stage="api") == pytest.approx(0.5)
    assert value(ring, "pipeline_check_e2e_latency_seconds_sum") == pytest.approx(1.75)
    assert value(ring, "pipeline_check_stage_latency_seconds_bucket", stage="kafka", le="0.25") == 1
    assert value(ring, "pipeline_check_stage_latency_seconds_bucket", stage="kafka", le="0.1") == 0


def test_a_duplicate_counts_once_per_canary_whatever_the_stage() -> None:
    ring, gen = make_ring()
    tag = ring.inject(gen, 0.0).trade_id
    assert ring.seen(gen, "kafka", tag, 0.1) is True
    assert ring.seen(gen, "kafka", tag, 0.2) is False  # a second record in a stream
    ring.seen(gen, "iceberg", tag, 0.3, copies=2)  # two rows at once in a table
    other = ring.inject(gen, 1.0).trade_id
    ring.seen(gen, "api", other, 1.1, copies=1)
    ring.seen(gen, "api", other, 1.2, copies=0)  # retracted: not a duplicate
    assert value(ring, "pipeline_check_canaries_duplicated_total") == 1


def test_probes_are_shown_only_their_generations_open_canaries() -> None:
    ring, gen = make_ring()
    recorder = GenerationRecorder(ring, gen)
    tags = [ring.inject(gen, float(i)).trade_id for i in range(6)]
    for tag in tags[:4]:
        ring.seen(gen, "kafka", tag, 10.0, ref=Ref(tag % 3, tag & 0xFF))
    ring.seen(gen, "consumer", tags[1], 10.5)
    ring.close_due(1.0 + LOST_AFTER)  # canaries 0 and 1 are closed
    assert recorder.due("consumer") == 2  # 2 and 3: at kafka, not committed, still open
    assert recorder.due("kafka") == 0  # measured from the source: nothing upstream says it is due
    pending, shards, positions = recorder.pending_refs("consumer", "kafka")
    assert pending.tolist() == tags[2:4]
    assert shards.tolist() == [t % 3 for t in tags[2:4]]
    assert positions.tolist() == [t & 0xFF for t in tags[2:4]]
    windows = recorder.pending_windows_ms("kafka")  # 4 and 5, one per canary symbol
    sent = {int(ring.sent_ms[i]) for i in (4, 5)}
    assert set(windows) == {"CANARYUSDT", "CANARYUSDT1"}
    assert {ms for first, last in windows.values() for ms in (first, last)} == sent
    assert len(recorder.run_windows_ms()) == 2
    assert ring.seen(gen, "api", tags[0], 11.0) is True  # a closed canary still in the ring: recorded


def test_other_tags_are_ignored() -> None:
    ring, gen = make_ring()
    ring.inject(gen, 0.0)
    other = RunId(gen.run.value + 1)
    assert ring.seen(gen, "kafka", other.tag(0), 1.0) is False  # another run id
    assert ring.seen(gen, "kafka", gen.run.tag(1), 1.0) is False  # not sent yet
    assert ring.seen(gen, "kafka", "not a tag", 1.0) is False
    assert ring.seen(gen, "kafka", 42, 1.0) is False
    assert value(ring, "pipeline_check_canaries_delivered_total", stage="kafka") == 0


def test_memory_stays_flat_and_a_slot_is_reused_only_after_its_canary_closed() -> None:
    capacity = 32
    ring, gen = make_ring(capacity)
    arrays = (ring.injected_at, ring.stages["api"].first)
    first = ring.inject(gen, 0.0).trade_id
    ring.diff(gen, "api", first, {"price": "1"}, {"price": "p:decimal"})
    assert len(ring.diffs) == 1
    for i in range(1, 10 * capacity):  # never closed by time: the ring closes what it must reuse
        ring.inject(gen, i * 0.01)
    assert ring.index.shape == (capacity,) and all(a.shape == (capacity,) for a in arrays)
    assert ring.in_flight == capacity
    assert ring.diffs == {}  # the corrupted canary's slot was reused
    assert ring.seen(gen, "kafka", first, 99.0) is False  # gone from the ring
    assert value(ring, "pipeline_check_canaries_lost_total", stage_reached="source") == 9 * capacity


def test_tags_never_repeat_across_generations() -> None:
    ring, gen = make_ring(capacity=16)
    gen.limit = 5
    seen: set[int] = set()
    for g in range(4):
        while not gen.full:
            tag = ring.inject(gen, float(len(seen))).trade_id
            assert tag not in seen
            seen.add(tag)
        parsed = parse(tag)
        assert parsed is not None and parsed[0] == gen.run and parsed[1] == 4
        gen = Generation(RunId(gen.run.value + 1), ring.next_index, limit=5)
        assert gen.base == 5 * (g + 1)
    with pytest.raises(RuntimeError):
        ring.inject(Generation(gen.run, 0), 0.0)  # a generation must start where the ring is


def test_a_generation_holds_at_most_a_tags_sequence_space() -> None:
    run = RunId.new(WALL)
    assert Generation(run, 0).limit == MAX_SEQ + 1 == 2**26
    with pytest.raises(ValueError):
        Generation(run, 0, limit=2**26 + 1)
    assert generation_size(1.0, 3600) == 3600
    assert generation_size(1e6, 3600) == 2**26


def test_the_loss_deadline_is_the_freshness_threshold_plus_grace() -> None:
    stages = ("kafka", "api")
    thresholds = parse_thresholds(
        [("t", t) for t in ("e2e.p99 < 30s", "e2e.max <= 2m", "stage.api.p99 < 5m", "e2e.min > 1s")], stages
    )
    assert loss_deadline(thresholds, 10.0) == 130.0
    assert loss_deadline(parse_thresholds([("t", "lost == 0")], stages), 10.0) == 40.0  # no e2e bound: 30 s
    assert ring_capacity(1.0, 300.0, 40.0) == 350
    assert ring_capacity(0.001, 1.0, 1.0) == 16


def test_the_window_is_judged_like_a_run_and_availability_counts_on_time_deliveries() -> None:
    ring, gen = make_ring(capacity=256)
    thresholds = parse_thresholds(
        [("t", t) for t in ("lost == 0", "e2e.p50 < 1s", "duplicates == 0")], ring.route.stages
    )
    for i in range(100):
        tag = ring.inject(gen, i * 0.1).trade_id
        if i % 10 == 3:
            ring.seen(gen, "kafka", tag, i * 0.1 + 0.05)  # stuck after kafka
        elif i == 50:
            deliver(ring, gen, tag, i * 0.1 + LOST_AFTER)  # delivered, but after its deadline
        else:
            deliver(ring, gen, tag, i * 0.1)
    assert judge(ring, ring.closed_since(0.0), thresholds, run=gen.run, rate=10.0).verdict is None
    ring.close_due(100.0)
    slots = ring.closed_since(0.0)
    verdict = judge(ring, slots, thresholds, run=gen.run, rate=10.0)
    assert verdict.canaries == 100
    assert verdict.on_time == 89
    assert verdict.availability == pytest.approx(0.89)
    assert verdict.verdict == Status.FAILED
    statuses = {r.threshold: r.status for r in verdict.results}
    assert statuses == {
        "lost == 0": Status.FAILED,
        "e2e.p50 < 1s": Status.PASSED,
        "duplicates == 0": Status.PASSED,
        "delivered > 0": Status.PASSED,
    }
    assert verdict.summary is not None
    assert verdict.summary.lost == 10  # the late one was delivered: the window's figures use every sighting
    assert {stage: len(tags) for stage, tags in verdict.summary.stuck.items()} == {"kafka": 10}
    later = ring.closed_since(6.0)  # the window's start moved past the stuck ones but for the last four
    assert len(later) == 40
    assert judge(ring, later, thresholds, run=gen.run, rate=10.0).summary.lost == 4  # type: ignore[union-attr]


def test_an_empty_window_has_no_verdict_and_no_availability() -> None:
    ring, gen = make_ring()
    verdict = judge(ring, ring.closed_since(0.0), [], run=gen.run, rate=1.0)
    assert verdict.verdict is None and verdict.label == "pending"
    assert math.isnan(verdict.availability)
    assert np.isnan(ring.injected_at).all()
