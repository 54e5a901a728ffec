"""Freshness: the SLA holds at a steady rate, per-stage budgets add up, the throughput floor holds,
and a consumer that flushes too rarely fails the freshness SLA with the numbers that show why."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_check.config import PipelineConfig
from pipeline_check.pytest_plugin import Validator
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status
from tests.e2e.helpers import without_throughput

pytestmark = [pytest.mark.e2e, pytest.mark.freshness]


@pytest.mark.slow
def test_freshness_holds_at_a_steady_rate_over_background_load(validator: Validator) -> None:
    outcome = validator("freshness")  # 1,000 canaries at 100/s over 200/s background
    outcome.check()
    e2e = outcome.result("e2e.p99 < 30s")
    assert e2e.samples == 1000 and e2e.observed is not None and e2e.observed < 30
    assert outcome.result("coverage == 100%").observed == 100.0  # canaries on every partition


def test_per_stage_budgets_hold_and_add_up_to_freshness(validator: Validator, pipeline_config: PipelineConfig) -> None:
    budgets = ("stage.kafka.p99 < 2s", "stage.consumer.p99 < 10s", "stage.iceberg.p99 < 10s", "stage.api.p99 < 5s")
    # latencies only: no rate judged, so a 2 s run will do
    outcome = validator("smoke", config=without_throughput(pipeline_config), thresholds=budgets, rate=50)
    outcome.check()
    book = outcome.book
    # freshness is the sum of the hops on the data path: source -> kafka -> iceberg -> api; a hop never goes
    # below zero (the API probe may see a row before the Iceberg probe's next look), so where one was raised
    # to zero the sum exceeds freshness by just that much
    hops = {stage: book.hop_latencies(stage) for stage in ("kafka", "iceberg", "api")}
    assert all((h >= 0).all() for h in hops.values()), hops
    raw = [book.first_seen(stage) - book.first_seen(up) for up, stage in (("kafka", "iceberg"), ("iceberg", "api"))]
    raised = sum(np.maximum(-r, 0.0) for r in raw)
    np.testing.assert_allclose(sum(hops.values()), book.latencies_since_injection("api") + raised, atol=1e-9)


def test_delivered_throughput_stays_above_the_floor(validator: Validator) -> None:
    outcome = validator("smoke", count=2500, rate=250, thresholds=("throughput >= 225/s",))  # 10 s
    outcome.check()
    observed = outcome.result("throughput >= 225/s").observed
    assert observed is not None and 225 <= observed <= 260, observed
    # plausible: within a factor of 2 of the canaries delivered over the time they took
    book = outcome.book
    took = np.nanmax(book.first_seen("api")) - np.nanmin(book.first_seen("source"))
    assert 0.5 < observed / (book.reached("api") / took) < 2


@pytest.mark.resilience
def test_a_consumer_that_flushes_rarely_fails_freshness(validator: Validator, local_stack: LocalStack) -> None:
    local_stack.restart("consumer", env={"FLUSH_INTERVAL_MS": "6000"})
    outcome = validator("smoke", count=200, rate=100, thresholds=("e2e.p99 < 3s",))
    check = outcome.result("e2e.p99 < 3s")
    assert check.status == Status.FAILED and check.observed is not None
    assert 3 < check.observed < 15, f"p99 {check.observed:.2f}s should reflect a 6 s flush interval"
    stages = {s.name: s for s in outcome.finished.summary.stages}
    # the delay shows where it is made: between Kafka and the table, not before
    assert stages["kafka"].latency["p99"] < 1 < 3 < stages["iceberg"].latency["p99"], stages
    assert outcome.finished.summary.lost == 0
    with pytest.raises(AssertionError, match=r"e2e\.p99 < 3s: failed, observed"):
        outcome.check()
