"""The sampled-series metrics of the threshold grammar (freshness, lag, snapshot age, API response
times, contract) and how a series is judged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline_check.core.errors import ConfigError
from pipeline_check.verdict.evaluation import evaluate, evaluate_series
from pipeline_check.verdict.measurements import Series
from pipeline_check.verdict.results import format_value
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import parse_threshold
from tests.unit.conftest import build_run

STAGES = ("kafka", "consumer", "iceberg", "api")


@pytest.mark.parametrize(
    ("text", "series", "kind", "aggregate", "value"),
    [
        ("freshness.iceberg.max < 60s", "freshness.iceberg", "latency", "max", 60.0),
        ("lag.consumer.p99 < 30s", "lag.consumer", "latency", "p99", 30.0),
        ("lag_records.consumer.max <= 5000", "lag_records.consumer", "count", "max", 5000.0),
        ("snapshot_age.iceberg.p50 < 2m", "snapshot_age.iceberg", "latency", "p50", 120.0),
        ("api.response.p95 < 500ms", "api.response", "latency", "p95", 0.5),
    ],
)
def test_series_metrics(text: str, series: str, kind: str, aggregate: str, value: float) -> None:
    t = parse_threshold(text, STAGES)
    assert (t.series, t.kind, t.aggregate, t.value, t.stage) == (series, kind, aggregate, value, None)
    assert t.needs_canaries is False
    assert t.passive_only is (not series.startswith("api."))


def test_contract_and_canary_metrics() -> None:
    contract = parse_threshold(" contract ", STAGES)
    assert (contract.kind, contract.series, contract.needs_canaries, contract.passive_only) == (
        "contract", None, False, False,
    )  # fmt: skip
    lost = parse_threshold("lost == 0", STAGES)
    assert lost.needs_canaries and not lost.passive_only
    assert format_value(0, "contract") == "0 differences" and format_value(1, "contract") == "1 difference"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("freshness.nope.max < 1s", "unknown stage 'nope'"),
        ("freshness.kafka.p42 < 1s", "unknown statistic 'p42'"),
        ("lag.consumer.max < 10", "'10' is not a duration"),
        ("lag_records.consumer.max < 1s", "'1s' is not a whole number"),
        ("api.response.p95 < 0s", "can never pass"),
        ("freshness.kafka < 1s", "unknown metric 'freshness.kafka'"),
        ("contracts", "is not `metric OP value`"),
    ],
)
def test_series_grammar_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_threshold(text, STAGES)
    assert problem in str(caught.value)


def samples(*values: float) -> Series:
    return Series(np.array(values, dtype=np.float64), detail="sampled")


def test_a_series_is_judged_on_its_samples() -> None:
    t = parse_threshold("freshness.iceberg.max < 2s", STAGES)
    passed = evaluate_series(t, samples(0.5, 1.9))
    assert (passed.status, passed.observed, passed.samples) == (Status.PASSED, 1.9, 2)
    assert passed.detail == "max of 2 samples of freshness.iceberg; sampled"
    failed = evaluate_series(t, samples(0.5, 2.5))
    assert (failed.status, failed.observed) == (Status.FAILED, 2.5)


def test_a_series_that_cannot_be_judged_is_inconclusive() -> None:
    t = parse_threshold("lag.consumer.p95 < 2s", STAGES)
    few = evaluate_series(t, samples(*[0.1] * 19))
    assert few.status == Status.INCONCLUSIVE and "too few samples for p95 of lag.consumer: 19 < 20" in few.detail
    idle = evaluate_series(t, Series(np.zeros(50), inconclusive="the pipeline looks idle"))
    assert (idle.status, idle.detail, idle.observed) == (Status.INCONCLUSIVE, "the pipeline looks idle", None)
    missing = evaluate_series(t, None)
    assert missing.status == Status.INCONCLUSIVE and "passive runs sample it" in missing.detail
    api = evaluate_series(parse_threshold("api.response.p95 < 1s", STAGES), None)
    assert "judged by `pipeline-check validate`" in api.detail


def test_the_engine_measurements_carry_series_and_leave_the_contract_to_the_gates() -> None:
    run = build_run(count=20)
    m = run.measurements
    t = parse_threshold("api.response.max < 1s", STAGES)
    assert evaluate(t, m).status == Status.INCONCLUSIVE  # not measured by the engine
    timed = dataclasses.replace(m, series={"api.response": samples(0.2)})
    assert evaluate(t, timed).status == Status.PASSED
    contract = evaluate(parse_threshold("contract", STAGES), m)
    assert contract.status == Status.INCONCLUSIVE and "pipeline-check contract" in contract.detail
