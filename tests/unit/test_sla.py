from __future__ import annotations

import numpy as np
import pytest

from pipeline_check.core.errors import ConfigError
from pipeline_check.verdict.evaluation import evaluate
from pipeline_check.verdict.measurements import Measurements, Tally
from pipeline_check.verdict.results import format_value
from pipeline_check.verdict.statistics import aggregate, min_samples
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import OPS, Threshold, parse_threshold, parse_thresholds
from pipeline_check.verdict.throughput import ThroughputFigures, judged_rate

STAGES = ("kafka", "iceberg", "api")


@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "kind", "stage", "agg", "relative"),
    [
        ("e2e.p99 < 30s", "e2e.p99", "<", 30.0, "latency", None, "p99", False),
        ("stage.iceberg.p95 <= 500ms", "stage.iceberg.p95", "<=", 0.5, "latency", "iceberg", "p95", False),
        ("e2e.max > 2m", "e2e.max", ">", 120.0, "latency", None, "max", False),
        ("e2e.avg >= 1.5s", "e2e.avg", ">=", 1.5, "latency", None, "avg", False),
        ("stage.kafka.p999 != 10ms", "stage.kafka.p999", "!=", 0.01, "latency", "kafka", "p999", False),
        ("e2e.p50==250 ms", "e2e.p50", "==", 0.25, "latency", None, "p50", False),
        ("stage.api.min < 1s", "stage.api.min", "<", 1.0, "latency", "api", "min", False),
        ("e2e.p90 < 0.5m", "e2e.p90", "<", 30.0, "latency", None, "p90", False),
        ("throughput >= 100/s", "throughput", ">=", 100.0, "rate", None, None, False),
        ("throughput >= 12.5 / s", "throughput", ">=", 12.5, "rate", None, None, False),
        ("throughput > 90%", "throughput", ">", 90.0, "rate", None, None, True),
        ("lost == 0", "lost", "==", 0.0, "count", None, None, False),
        ("duplicates <= 3", "duplicates", "<=", 3.0, "count", None, None, False),
        ("corrupted == 0", "corrupted", "==", 0.0, "count", None, None, False),
        ("out_of_order < 5", "out_of_order", "<", 5.0, "count", None, None, False),
        ("  delivered >= 100  ", "delivered", ">=", 100.0, "count", None, None, False),
        ("retracted == 0", "retracted", "==", 0.0, "count", None, None, False),
        ("incomplete == 0", "incomplete", "==", 0.0, "count", None, None, False),
        ("loss_rate < 0.1%", "loss_rate", "<", 0.1, "share", None, None, False),
        ("duplicate_rate <= 1%", "duplicate_rate", "<=", 1.0, "share", None, None, False),
        ("coverage == 100%", "coverage", "==", 100.0, "share", None, None, False),
    ],
)
def test_grammar(
    text: str,
    metric: str,
    op: str,
    value: float,
    kind: str,
    stage: str | None,
    agg: str | None,
    relative: bool,
) -> None:
    t = parse_threshold(text, STAGES)
    assert (t.metric, t.op, t.kind, t.stage, t.aggregate, t.relative) == (metric, op, kind, stage, agg, relative)
    assert t.value == pytest.approx(value)
    assert t.text == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("latency < 5s", "unknown metric 'latency'"),
        ("stage.kafka < 5s", "unknown metric 'stage.kafka'"),
        ("stage.nope.p99 < 1s", "unknown stage 'nope'; configured stages: kafka, iceberg, api"),
        ("e2e.p42 < 1s", "unknown statistic 'p42'"),
        ("stage.kafka.median < 1s", "unknown statistic 'median'"),
        ("e2e.p99 < 30h", "'30h' is not a duration"),
        ("e2e.p99 < 30", "'30' is not a duration"),
        ("throughput >= 100", "'100' is not a rate"),
        ("throughput >= 100/m", "'100/m' is not a rate"),
        ("lost == 1.5", "'1.5' is not a whole number"),
        ("lost = 0", "is not `metric OP value`"),
        ("E2E.p99 < 1s", "is not `metric OP value`"),
        ("loss_rate < 0.1", "'0.1' is not a percentage"),
        ("throughput >= 200%", "can never pass (throughput is always between 0 and 100%)"),
        ("throughput > 100%", "can never pass"),
        ("coverage > 100%", "can never pass"),
        ("lost < 0", "can never pass (lost is always between 0 and inf)"),
        ("e2e.p99 < 0s", "can never pass"),
        ("loss_rate < 0%", "can never pass"),
    ],
)
def test_grammar_errors_name_the_value(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_threshold(text, STAGES, setting="scenarios.x.thresholds")
    assert str(exc.value).startswith(f"scenarios.x.thresholds={text!r} (str): ")
    assert problem in str(exc.value)


@pytest.mark.parametrize(
    ("agg", "needed"),
    [("p50", 2), ("p90", 10), ("p95", 20), ("p99", 100), ("p999", 1000), ("max", 1), ("min", 1), ("avg", 1)],
)
def test_min_samples(agg: str, needed: int) -> None:
    assert min_samples(agg) == needed


@pytest.mark.parametrize(
    ("samples", "agg", "expected"),
    [
        (np.arange(1, 101), "p50", 50),
        (np.arange(1, 101), "p95", 95),
        (np.arange(1, 101), "p99", 99),
        (np.arange(1, 1001), "p999", 999),
        (np.arange(1, 11), "p90", 9),
        (np.arange(1, 11), "p99", 10),
        ([1.0, 2.0], "p50", 1.0),  # nearest rank: an observed value, never interpolated (1.5)
        ([3.0, 1.0, 2.0], "min", 1.0),
        ([3.0, 1.0, 2.0], "max", 3.0),
        ([3.0, 1.0, 2.0], "avg", 2.0),
    ],
)
def test_nearest_rank(samples: list[float], agg: str, expected: float) -> None:
    assert aggregate(np.asarray(samples, dtype=np.float64), agg) == expected


@pytest.mark.parametrize(
    ("op", "observed", "target", "holds"),
    [
        ("<", 1, 2, True),
        ("<", 2, 2, False),
        ("<=", 2, 2, True),
        ("<=", 3, 2, False),
        (">", 3, 2, True),
        (">", 2, 2, False),
        (">=", 2, 2, True),
        (">=", 1, 2, False),
        ("==", 0, 0, True),
        ("==", 1, 0, False),
        ("!=", 1, 0, True),
        ("!=", 0, 0, False),
    ],
)
def test_operators(op: str, observed: float, target: float, holds: bool) -> None:
    assert Threshold("t", "lost", op, target, "count").holds(observed) is holds
    assert OPS[op](observed, target) is holds


def test_the_same_threshold_twice_is_an_error() -> None:
    texts = [("sla.thresholds", "lost == 0"), ("scenarios.x.thresholds", "lost==0")]
    with pytest.raises(
        ConfigError, match=r"scenarios\.x\.thresholds='lost==0' .*repeats 'lost == 0' \(sla\.thresholds\)"
    ):
        parse_thresholds(texts, STAGES)
    assert len(parse_thresholds([("a", "lost == 0"), ("b", "lost <= 0")], STAGES)) == 2


def measurements(
    e2e: list[float] | None = None,
    *,
    tallies: dict[str, Tally] | None = None,
    throughput: float = 95.0,
    tail: float | None = None,
    tail_upper: float | None = None,
    steps: int = 10,
    injected: float = 100.0,
    limited: str | None = None,
    extra: int = 0,
    gap: float = 0.5,
) -> Measurements:
    latencies = {} if e2e is None else {"e2e": np.asarray(e2e, dtype=np.float64)}
    upper = tail if tail_upper is None else tail_upper
    figures = ThroughputFigures(
        judged_rate(throughput, upper), tail, injected, steps, "delivered", limited, span=10.0, interval=gap,
        tail_upper=upper, whole=throughput,
    )  # fmt: skip
    return Measurements(latencies, tallies or {}, figures, Tally(0, 3, "3 partitions"), int(injected), extra)


VERBS = {"lost": "lost", "duplicates": "duplicated", "corrupted": "corrupted", "out_of_order": "out of order"}


def tally(count: int, out_of: int = 100, **kw: str) -> dict[str, Tally]:
    return {
        name: Tally(count, out_of, "detail", verb=verb, population="injected", **kw) for name, verb in VERBS.items()
    }


TENTHS = [i / 10 for i in range(1, 101)]  # 0.1 .. 10.0 s; p99 = 9.9 s
INF = float("inf")


@pytest.mark.parametrize(
    ("threshold", "m", "status", "observed"),
    [
        ("e2e.p99 < 10s", measurements(TENTHS), Status.PASSED, 9.9),
        ("e2e.p99 < 9s", measurements(TENTHS), Status.FAILED, 9.9),
        ("e2e.max <= 10s", measurements(TENTHS), Status.PASSED, 10.0),
        ("e2e.p99 < 1000s", measurements(TENTHS[:99]), Status.INCONCLUSIVE, None),  # 99 < 100 samples
        ("e2e.max < 1000s", measurements([5.0]), Status.PASSED, 5.0),
        ("e2e.max < 1000s", measurements([5.0], extra=10), Status.INCONCLUSIVE, None),  # sla.min_samples raises it
        ("stage.kafka.p50 < 1s", measurements(TENTHS), Status.INCONCLUSIVE, None),  # no series at all
        ("e2e.p99 < 30s", measurements([1.0] * 98 + [INF] * 2), Status.FAILED, INF),  # undelivered count
        ("e2e.p99 < 30s", measurements([1.0] * 99 + [INF]), Status.PASSED, 1.0),  # 1 in 100 is the 1% allowed
        ("e2e.avg < 30s", measurements([1.0] * 99 + [INF]), Status.FAILED, INF),
        ("throughput >= 90%", measurements(), Status.PASSED, 95.0),
        ("throughput >= 96%", measurements(), Status.FAILED, 95.0),
        ("throughput >= 90/s", measurements(throughput=80.0), Status.FAILED, 80.0),
        ("throughput >= 100/s", measurements(injected=80.0), Status.INCONCLUSIVE, 95.0),  # injected too slowly
        ("throughput >= 90%", measurements(tail=50.0), Status.FAILED, 50.0),  # a late slowdown
        ("throughput >= 90%", measurements(tail=80.0, tail_upper=95.0), Status.PASSED, 95.0),  # or jitter
        ("throughput >= 1/s", measurements(steps=4), Status.INCONCLUSIVE, None),  # too few steps for a slope
        ("throughput >= 1/s", measurements(gap=2.5), Status.INCONCLUSIVE, None),  # a run of 4 batch intervals
        ("throughput >= 90%", measurements(limited="injection paused 2 times"), Status.INCONCLUSIVE, 95.0),
        ("lost == 0", measurements(tallies=tally(0)), Status.PASSED, 0.0),
        ("lost == 0", measurements(tallies=tally(2)), Status.FAILED, 2.0),
        ("duplicates <= 3", measurements(tallies=tally(3)), Status.PASSED, 3.0),
        ("lost == 0", measurements(tallies=tally(0), injected=0), Status.INCONCLUSIVE, None),  # nothing sent
        ("corrupted == 0", measurements(tallies=tally(0, inconclusive="nothing compared")), Status.INCONCLUSIVE, None),
        ("out_of_order == 0", measurements(tallies=tally(0, not_applicable="own order")), Status.NOT_APPLICABLE, None),
        ("loss_rate < 0.1%", measurements(tallies=tally(0, 10_000)), Status.PASSED, 0.0),  # bound 0.03 %
        ("loss_rate < 0.1%", measurements(tallies=tally(0, 100)), Status.INCONCLUSIVE, 0.0),  # bound 2.95 %
        ("loss_rate < 0.1%", measurements(tallies=tally(5, 1000)), Status.FAILED, 0.5),
        # one rule for <, <= and ==: broken by the rate seen, kept only by its bound; "0%" read to its last digit
        ("loss_rate == 0%", measurements(tallies=tally(0, 3)), Status.INCONCLUSIVE, 0.0),  # bound 63 %
        ("loss_rate <= 0%", measurements(tallies=tally(0, 3)), Status.INCONCLUSIVE, 0.0),
        ("loss_rate == 0%", measurements(tallies=tally(0, 600)), Status.PASSED, 0.0),  # bound 0.498 % < 0.5 %
        ("loss_rate <= 0%", measurements(tallies=tally(0, 600)), Status.PASSED, 0.0),
        ("loss_rate == 0.0%", measurements(tallies=tally(0, 600)), Status.INCONCLUSIVE, 0.0),  # needs < 0.05 %
        ("loss_rate == 0%", measurements(tallies=tally(1, 5000)), Status.FAILED, 0.02),  # any loss breaks 0 %
        ("loss_rate <= 1%", measurements(tallies=tally(3, 1000)), Status.PASSED, 0.3),  # bound 0.84 %
        ("coverage == 100%", measurements(), Status.PASSED, 100.0),
    ],
)
def test_evaluate(threshold: str, m: Measurements, status: Status, observed: float | None) -> None:
    result = evaluate(parse_threshold(threshold, STAGES), m)
    assert result.status == status, result.detail
    assert result.observed == (None if observed is None else pytest.approx(observed))
    assert result.threshold == threshold


def test_evaluate_details() -> None:
    never = evaluate(parse_threshold("e2e.p99 < 30s", STAGES), measurements([1.0] * 98 + [INF] * 2))
    assert never.detail == "p99 of 100 e2e latencies (2 never arrived, counted as infinitely late)"
    assert never.observed_text == "never (not delivered)"
    assert never.samples == 100
    floor = evaluate(parse_threshold("throughput >= 90%", STAGES), measurements())
    assert "floor 90% of the achieved injection rate 100.0/s = 90.0/s" in floor.detail
    steps = evaluate(parse_threshold("throughput >= 1/s", STAGES), measurements(steps=1))
    assert steps.detail.startswith("too little to judge a rate on: 1 delivery steps (need 5)")
    few = evaluate(parse_threshold("e2e.p999 < 1s", STAGES), measurements(TENTHS))
    assert few.detail.startswith("too few samples for p999 of e2e latency: 100 < 1000")
    assert few.observed_text == "n/a"
    lost = evaluate(parse_threshold("lost == 0", STAGES), measurements(tallies=tally(0, 1000)))
    assert lost.detail.startswith("0 lost of 1,000 injected: rate < 0.30% (95%)")
    assert lost.rate_bound == pytest.approx(0.2991, abs=1e-4)
    rate = evaluate(parse_threshold("loss_rate < 0.1%", STAGES), measurements(tallies=tally(0, 100)))
    assert "inject more canaries" in rate.detail
    zero = evaluate(parse_threshold("loss_rate == 0%", STAGES), measurements(tallies=tally(0, 3)))
    assert "the bound is not below 0.5% (the 0% limit, read to its last written digit)" in zero.detail


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.0123, "latency", "12.3ms"),
        (2.5, "latency", "2.500s"),
        (INF, "latency", "never (not delivered)"),
        (98.54, "rate", "98.5/s"),
        (3.0, "count", "3"),
        (0.3, "share", "0.30%"),
    ],
)
def test_format_value(value: float, kind: str, text: str) -> None:
    assert format_value(value, kind) == text  # type: ignore[arg-type]
