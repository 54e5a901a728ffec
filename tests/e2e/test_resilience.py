"""Resilience scenarios on the local stack: real faults (kill -9, broker restart, network latency and
cuts through Toxiproxy, a locked catalog, a stopped API, a frozen consumer) while canaries flow, each
judged per window with its recovery time; and the faults a pipeline does not survive fail as they must."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from pipeline_check.pytest_plugin import Validator
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status

pytestmark = [pytest.mark.e2e, pytest.mark.resilience, pytest.mark.slow]

SCENARIOS = [
    "consumer-kill",
    "broker-restart",
    "network-latency",
    "network-cut",
    "catalog-outage",
    "api-outage",
    "consumer-pause",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_reference_pipeline_survives(
    scenario: str, validator: Validator, local_stack: LocalStack, record_property: Callable[[str, object], None]
) -> None:
    outcome = validator(scenario)
    summary = outcome.finished.summary
    [fault] = summary.faults
    assert math.isfinite(fault.end_s) and fault.end_s > fault.start_s, fault
    recovery = outcome.result(next(r.threshold for r in outcome.finished.results if r.threshold.startswith("recovery")))
    record_property("recovery_s", recovery.observed)
    record_property("fault_s", round(fault.end_s - fault.start_s, 2))
    print(f"{scenario}: {fault.label} for {fault.end_s - fault.start_s:.1f}s, recovered in {recovery.observed_text}")
    outcome.check()
    assert summary.windows["during"], "canaries were sent while the fault held"


def test_a_consumer_without_idempotence_duplicates_after_a_kill(validator: Validator, local_stack: LocalStack) -> None:
    local_stack.restart("consumer", env={"CONSUMER_UNSAFE_SKIP_IDEMPOTENCE": "1"})
    # the rows written twice are there once every canary is: no long drain or settle needed to see them
    outcome = validator("consumer-kill", drain_timeout="20s", settle="5s")
    check = outcome.result("duplicates == 0")
    assert check.status == Status.FAILED and check.observed is not None and check.observed > 0, check.detail
    stages = outcome.finished.summary.stage
    assert stages["kafka"].extra_copies == 0 < stages["iceberg"].extra_copies, "duplicated by the table writer"
