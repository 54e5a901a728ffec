"""The verdict matrix: the reference pipeline with one real fault switched on at a time (its ``UNSAFE_*``
switches and write modes), and the exact set of checks each makes fail, while the rest pass.

Every run is short (100 canaries over 5 s: enough for a p99), and a service is restarted only when its
switches change, so the whole matrix fits the ``make test`` budget. Five seconds are too few to tell a
delivered rate within 10 % (a floor of 90 %) on a busy machine, so ``throughput`` is judged only by the
cases about it (the rate has its own e2e test, over more canaries); every case checks that the estimate
is plausible: within a factor of 2 of the canaries delivered over the time they took.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline_check.config import PipelineConfig
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.runs.driver import Outcome
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status
from tests.e2e.helpers import without_throughput

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

F, INC = Status.FAILED, Status.INCONCLUSIVE
# the reference ingestor keys by symbol and the canary symbols cover the raw topic's three partitions:
# canaries of CANARYUSDT ride partition 1
PARTITION = "1"


@dataclass(frozen=True)
class Case:
    name: str
    expected: Mapping[str, Status]  # every check not in here must pass
    consumer: Mapping[str, str] = field(default_factory=dict)
    api: Mapping[str, str] = field(default_factory=dict)
    load: Mapping[str, object] = field(default_factory=dict)
    stuck_after: str | None = None  # where every lost canary must have stopped
    throughput: bool = False  # judge the default throughput floor too


CASES = [
    Case("clean append", {}),
    Case("clean upsert, re-delivering rows", {}, consumer={"WRITE_MODE": "upsert", "REDELIVER_LAST_FLUSH": "1"}),
    Case("clean overwrite commits", {}, consumer={"WRITE_MODE": "overwrite"}),
    Case(
        "drop a fifth of records",
        {"lost == 0": F, "e2e.p99 < 30s": F},
        {"UNSAFE_DROP_FRACTION": "0.2"},
        stuck_after="consumer",
    ),
    Case("duplicate a fifth of records", {"duplicates == 0": F}, {"UNSAFE_DUPLICATE_FRACTION": "0.2"}),
    Case("round prices to 2 decimals", {"corrupted == 0": F}, {"UNSAFE_ROUND_PRICE_DECIMALS": "2"}),
    Case("prices through float64", {"corrupted == 0": F}, {"UNSAFE_FLOAT_PRICES": "1"}),
    Case(
        "drop one partition",
        {"lost == 0": F, "e2e.p99 < 30s": F},
        {"UNSAFE_DROP_PARTITION": PARTITION},
        stuck_after="consumer",
    ),
    Case(
        "stall one partition",
        {"lost == 0": F, "e2e.p99 < 30s": F},
        {"UNSAFE_STALL_PARTITION": PARTITION},
        stuck_after="kafka",
    ),
    Case("re-append the last batch after a delay", {"duplicates == 0": F}, {"UNSAFE_REAPPEND_AFTER_MS": "1000"}),
    Case("never commit consumer offsets", {"incomplete == 0": F}, {"UNSAFE_NEVER_COMMIT": "1"}),
    # found only by the final search outside their window: corrupted (trade_time moved), not lost; all
    # arrive at the API in one step, so no delivered rate can be judged
    Case(
        "shift timestamps by an hour",
        {"corrupted == 0": F, "throughput >= 90%": INC},
        {"UNSAFE_SHIFT_TIME_MS": "3600000"},
        throughput=True,
    ),
    # a delivery or two in the run: no rate can be judged, and the verdict says so
    Case(
        "hold each batch for 12 s",
        {"throughput >= 90%": INC},
        {"FLUSH_INTERVAL_MS": "12000", "FLUSH_MAX_ROWS": "1000000"},
        load={"drain_timeout": "30s", "settle": "1s"},
        throughput=True,
    ),
    Case("API answers oldest first", {}, api={"UNSAFE_API_OLDEST_FIRST": "1"}),
    Case("API caps pages below the limit", {}, api={"UNSAFE_API_PAGE_CAP": "10"}),
]


@pytest.fixture(scope="module")
def matrix_stack(pipeline_stack: PipelineStack) -> Iterator[LocalStack]:
    """The session's local stack; its services go back to their declared settings after the matrix."""
    stack = pipeline_stack.require_local()
    yield stack
    stack.reset()


def thresholds(config: PipelineConfig, case: Case) -> PipelineConfig:
    """The default checks, without the throughput floor unless the case is about it."""
    return config if case.throughput else without_throughput(config)


def plausible_throughput(outcome: Outcome) -> None:
    """The delivered rate estimated, where the run holds enough deliveries for one, is within a factor of 2
    of the canaries delivered over the time they took to arrive."""
    figures = outcome.finished.summary.throughput
    if figures.steps < 5 or figures.span < 5 * figures.interval:
        return
    book = outcome.book
    arrivals = book.first_seen(book.route.final)
    took = float(np.nanmax(arrivals) - np.nanmin(arrivals))
    crude = book.reached(book.route.final) / took
    assert 0.5 < figures.delivered / crude < 2, (figures.delivered, crude)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_fault_fails_exactly_its_checks(
    case: Case, matrix_stack: LocalStack, validator: Validator, pipeline_config: PipelineConfig
) -> None:
    matrix_stack.ensure("consumer", case.consumer)
    matrix_stack.ensure("api", case.api)
    load = {"count": 100, "rate": 20, "drain_timeout": "8s", **case.load}
    outcome = validator(config=thresholds(pipeline_config, case), **load)
    got = {r.threshold: r.status for r in outcome.finished.results if r.status != Status.PASSED}
    details = {r.threshold: r.detail for r in outcome.finished.results if r.status != Status.PASSED}
    assert got == dict(case.expected), details
    plausible_throughput(outcome)
    summary = outcome.finished.summary
    if case.stuck_after is not None:
        assert set(summary.stuck) == {case.stuck_after}, summary.stuck
    if "corrupted == 0" in case.expected:
        assert summary.diffs and all(d.stage in ("iceberg", "api") for d in summary.diffs)
    if case.name.startswith("shift"):
        assert {d.field for d in summary.diffs} == {"trade_time"} and summary.lost == 0
