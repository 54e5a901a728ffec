"""The verdict matrix: the reference pipeline with one real fault switched on at a time (its ``UNSAFE_*``
switches, write modes, API time forms and a Kafka source), and the exact set of checks each makes fail,
while the rest pass (healthy shapes pass everything). Then one run whose every figure must agree between
the console, the JSON, the JUnit XML and the HTML report.

Every run is short (100 canaries over 3 s, 5 s where a rate is judged: enough for a p99), freshness is judged
at 10 s (the drain waits that long for every canary, so lossy runs stay short), and a service is restarted
only when its switches change, so the whole matrix fits the ``make test`` budget. Five seconds are too few
to tell a delivered rate within 10 % (a floor of 90 %) on a busy machine, so ``throughput`` is judged only
by the cases about it (the rate has its own e2e test, over more canaries); every case checks that the
estimate is plausible: within a factor of 2 of the canaries delivered over the time they took.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pipeline_check.config import PipelineConfig
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.html import HtmlReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import PERCENTILES, JUnitReporter
from pipeline_check.runs.driver import Outcome
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.results import format_value
from pipeline_check.verdict.status import Status
from tests.e2e.conftest import ConfigVariant
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
    e2e: str = "10s"  # the freshness bound judged: the drain waits at least that long for every canary
    config: tuple[tuple[str, str], ...] = ()  # pipeline.toml text replaced
    source: str | None = None  # the [source] section's body replaced
    extra: tuple[str, ...] = ()  # thresholds judged beside the defaults


API_FIELDS = (
    'fields = { symbol = "s", price = "p:decimal", quantity = "q:decimal", side = "m:side", trade_time = "T:ms" }'
)
API_QUERY = "start_time={start_ms}&end_time={end_ms}"


def api_form(form: str) -> tuple[tuple[str, str], ...]:
    """The API stage asking and reading times in ``form`` (API_TIME_FORMAT): its query's placeholders, and
    its trade_time compared as an instant in any form, at the form's precision."""
    return (
        (API_QUERY, f"start_time={{start_{form}}}&end_time={{end_{form}}}"),
        (f"limit = 5000\n{API_FIELDS}", f"limit = 5000\n{API_FIELDS.replace('T:ms', 'T:time')}"),
    )


def switches(form: str, **faults: str) -> dict[str, str]:
    return {"API_TIME_FORMAT": form, **faults}


RETRACT = {"UNSAFE_API_RETRACT_FRACTION": "0.2", "UNSAFE_API_RETRACT_AFTER_MS": "1000"}
# a late change lands that long after its commit: well inside a run of 5 s and its settle window
LATE_MS = "1000"

# Consumer shapes first, then the API's (each API shape carries one of its time forms, so every form is read
# without a restart of its own), then the Kafka source: a service restarts only when its switches change.
CASES = [
    Case("clean append", {}),
    # committed rows rewritten a second later with their price one unit off: corrupted, never retracted
    Case(
        "rewrite a tenth of rows after commit",
        {"corrupted == 0": F},
        {"UNSAFE_REWRITE_FRACTION": "0.1", "UNSAFE_REWRITE_AFTER_MS": LATE_MS},
    ),
    # deleted a second after commit, appended again unchanged a second later: retracted (and restored)
    Case(
        "delete a tenth of rows, then restore them",
        {"retracted == 0": F},
        {"UNSAFE_DELETE_FRACTION": "0.1", "UNSAFE_DELETE_AFTER_MS": LATE_MS, "UNSAFE_RESTORE_AFTER_MS": LATE_MS},
    ),
    Case("clean upsert, re-delivering rows", {}, consumer={"WRITE_MODE": "upsert", "REDELIVER_LAST_FLUSH": "1"}),
    Case("clean overwrite commits", {}, consumer={"WRITE_MODE": "overwrite"}),
    Case(
        "drop a fifth of records",
        {"lost == 0": F, "e2e.p99 < 10s": F},
        {"UNSAFE_DROP_FRACTION": "0.2"},
        stuck_after="consumer",
    ),
    # 4 of 5 never written, offsets committed: lost, and the rate delivered is a fifth of every canary sent
    Case(
        "keep every fifth record",
        {"lost == 0": F, "e2e.p99 < 10s": F, "throughput >= 90%": F},
        {"UNSAFE_KEEP_EVERY_N": "5"},
        stuck_after="consumer",
        throughput=True,
    ),
    Case("duplicate a fifth of records", {"duplicates == 0": F}, {"UNSAFE_DUPLICATE_FRACTION": "0.2"}),
    Case("round prices to 2 decimals", {"corrupted == 0": F}, {"UNSAFE_ROUND_PRICE_DECIMALS": "2"}),
    Case("prices through float64", {"corrupted == 0": F}, {"UNSAFE_FLOAT_PRICES": "1"}),
    Case(
        "drop one partition",
        {"lost == 0": F, "e2e.p99 < 10s": F},
        {"UNSAFE_DROP_PARTITION": PARTITION},
        stuck_after="consumer",
    ),
    Case(
        "stall one partition",
        {"lost == 0": F, "e2e.p99 < 10s": F},
        {"UNSAFE_STALL_PARTITION": PARTITION},
        stuck_after="kafka",
    ),
    Case("re-append the last batch after a delay", {"duplicates == 0": F}, {"UNSAFE_REAPPEND_AFTER_MS": "1000"}),
    Case("never commit consumer offsets", {"incomplete == 0": F}, {"UNSAFE_NEVER_COMMIT": "1"}),
    # every time moved: corrupted (trade_time) at the table and the API, not lost; the API shows canaries
    # where the probe was not looking for them, so no latency is measured (never the drain or the sweep)
    Case("shift timestamps by 2 s", {"corrupted == 0": F, "e2e.p99 < 10s": INC}, {"UNSAFE_SHIFT_TIME_MS": "2000"}),
    Case(
        "shift timestamps by an hour",
        {"corrupted == 0": F, "throughput >= 90%": INC, "e2e.p99 < 10s": INC},
        {"UNSAFE_SHIFT_TIME_MS": "3600000"},
        throughput=True,
    ),
    # a delivery or two in the run: no rate can be judged, and the verdict says so
    Case(
        "hold each batch for 12 s",
        {"throughput >= 90%": INC},
        {"FLUSH_INTERVAL_MS": "12000", "FLUSH_MAX_ROWS": "1000000"},
        load={"settle": "1s"},
        throughput=True,
        e2e="30s",
    ),
    # paged forward by start_time, an end_time the API ignores does no harm; records past it are left out
    Case(
        "API answers oldest first, ignores end_time, in epoch seconds",
        {},
        api=switches("s", UNSAFE_API_OLDEST_FIRST="1", UNSAFE_API_IGNORE_END_TIME="1"),
        config=api_form("s"),
    ),
    Case(
        "API caps pages below the limit, naive ISO times",
        {},
        api=switches("iso_naive", UNSAFE_API_PAGE_CAP="10"),
        config=api_form("iso_naive"),
    ),
    # the API stops returning a fifth of trades a second after it first did: seen in ISO and float seconds
    Case("API retracts rows, ISO times", {"retracted == 0": F}, api=switches("iso", **RETRACT), config=api_form("iso")),
    Case(
        "API retracts rows, float seconds",
        {"retracted == 0": F},
        api=switches("float_s", **RETRACT),
        config=api_form("float_s"),
    ),
    # capped below the limit and ordered by price: windows are split, nothing truncated is trusted
    Case(
        "API orders capped pages by price, microseconds",
        {},
        api=switches("us", UNSAFE_API_PRICE_ORDER="1", UNSAFE_API_PAGE_CAP="10"),
        config=api_form("us"),
    ),
    # canaries produced to Kafka (each keyed onto its partition), the table's kafka_offset ordering them per partition
    Case(
        "Kafka source, ordered by the offset column",
        {},
        source='type = "kafka"',
        config=(
            ('tag_column = "trade_id"\ncatalog', 'tag_column = "trade_id"\norder_column = "kafka_offset"\ncatalog'),
        ),
        extra=("out_of_order == 0",),
    ),
]


@pytest.fixture(scope="module")
def matrix_stack(pipeline_stack: PipelineStack) -> Iterator[LocalStack]:
    """The session's local stack; its services go back to their declared settings after the matrix."""
    stack = pipeline_stack.require_local()
    yield stack
    stack.reset()


def thresholds(config: PipelineConfig, case: Case) -> PipelineConfig:
    """The default checks with the case's freshness bound, and its extra ones; without the throughput floor
    unless the case is about it."""
    chosen = config if case.throughput else without_throughput(config)
    texts = tuple(f"e2e.p99 < {case.e2e}" if t == "e2e.p99 < 30s" else t for t in chosen.sla.thresholds)
    return chosen.model_copy(update={"sla": chosen.sla.model_copy(update={"thresholds": (*texts, *case.extra)})})


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
    case: Case,
    matrix_stack: LocalStack,
    validator: Validator,
    pipeline_config: PipelineConfig,
    config_variant: ConfigVariant,
) -> None:
    matrix_stack.ensure("consumer", case.consumer)
    matrix_stack.ensure("api", case.api)
    config = config_variant(*case.config, source=case.source) if case.config or case.source else pipeline_config
    # 3 s of injection; 5 s where a delivered rate is judged (it needs five batch intervals and more)
    load = {"count": 100, "rate": 20 if case.throughput else 33, "drain_timeout": "8s", **case.load}
    outcome = validator(config=thresholds(config, case), **load)
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
        # no canary's latency at the API was measured: none is built from the drain or a last sweep
        assert summary.e2e["unmeasured"] == summary.injected and "p99" not in summary.e2e
    if case.name.startswith("rewrite"):
        changed = [d for d in summary.diffs if d.changed_after_s is not None]
        assert changed and {d.field for d in changed} == {"price"}, summary.diffs
        assert all(d.previous == d.expected for d in changed) and summary.retracted == 0
    if case.name.startswith("delete"):
        assert {r.stage for r in summary.retractions} <= {"iceberg", "api"} and summary.stage["iceberg"].retracted
        assert summary.stage["iceberg"].restored, "no row came back within the run"
    if case.name.startswith("API retracts"):
        assert summary.stage["api"].retracted and not summary.stage["iceberg"].retracted
    if "ignores end_time" in case.name:
        assert any("does not honour a time bound" in n for n in outcome.finished.notes), outcome.finished.notes
    if case.name.startswith("API orders"):
        assert any("cannot be paged, so windows are split" in n for n in outcome.finished.notes)
        assert not summary.stage["api"].unobservable
    if case.name.startswith("Kafka source"):
        assert summary.order_stages == ["iceberg"] and summary.ordered_canaries == summary.delivered


def test_every_report_shows_the_same_figures(
    matrix_stack: LocalStack, validator: Validator, config_variant: ConfigVariant, tmp_path: Path
) -> None:
    """One real run through the console, JSON, JUnit and HTML reporters: every figure they share agrees."""
    matrix_stack.ensure("consumer", {})
    matrix_stack.ensure("api", {"API_TIME_FORMAT": "ns"})  # the one time form no case above asks in
    screen = io.StringIO()
    paths = {name: tmp_path / f"report.{name}" for name in ("json", "xml", "html")}
    handlers = [
        ConsoleReporter(Console(file=screen, width=400, color_system=None), live=False),
        JsonReporter(paths["json"]),
        JUnitReporter(paths["xml"]),
        HtmlReporter(paths["html"]),
    ]
    outcome = validator(
        config=config_variant(*api_form("ns")), handlers=handlers, count=100, rate=33, drain_timeout="8s"
    )
    console, html_text = screen.getvalue(), _text(paths["html"].read_text())
    doc = json.loads(paths["json"].read_text())
    junit = ET.parse(paths["xml"]).getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    s = outcome.finished.summary
    # counts
    for name in ("injected", "delivered", "lost", "duplicates", "corrupted", "retracted"):
        value = getattr(s, name)
        assert props[name] == str(value)
    assert (doc["e2e"]["injected"], doc["e2e"]["reached"]) == (s.injected, s.delivered)
    assert (doc["lost"]["count"], doc["duplicates"], doc["retracted"]) == (s.lost, s.duplicates, s.retracted)
    assert f"{s.delivered}/{s.injected}" in console and f"{s.delivered:,}/{s.injected:,}" in html_text
    # the one throughput figure
    rate = s.throughput.delivered
    assert doc["throughput"]["delivered_per_s"] == rate and props["throughput_per_s"] == f"{rate:.3f}"
    assert (
        f"delivered {format_value(rate, 'rate')}" in console and f"throughput {format_value(rate, 'rate')}" in html_text
    )
    # latency percentiles, end to end and per stage, with their resolution
    for prefix, stats, json_stats in (
        ("e2e", s.e2e, doc["e2e"]["latency"]),
        *((f"stage.{st.name}", st.latency, doc["stages"][i]["latency"]) for i, st in enumerate(s.stages)),
    ):
        for p in ("p50", "p95", "p99", "max"):
            assert json_stats[p] == stats[p], (prefix, p)
            if p in PERCENTILES:  # JUnit carries the percentiles
                assert props[f"{prefix}.{p}_s"] == f"{stats[p]:.6f}", (prefix, p)
            shown = format_value(stats[p], "latency")
            assert shown in console and shown in html_text, (prefix, p, shown)
    for st in s.stages:
        assert doc["stages"][[x["name"] for x in doc["stages"]].index(st.name)]["resolution_s"] == st.resolution_s
        assert format_value(st.resolution_s, "latency") in console
    # every check: the same status and observed value everywhere
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    for result, checked in zip(outcome.finished.results, doc["checks"], strict=True):
        assert (checked["threshold"], checked["status"], checked["observed_text"]) == (
            result.threshold,
            result.status.label,
            result.observed_text,
        )
        case_props = {p.get("name"): p.get("value") for p in cases[result.threshold].iter("property")}
        assert (case_props["status"], case_props["observed"]) == (result.status.label, result.observed_text)
        line = next(line for line in console.splitlines() if f" {result.threshold} " in f" {line} ")
        assert result.status.label in line and result.observed_text in line
        assert result.observed_text in html_text
    assert doc["verdict"] == outcome.finished.verdict.label and console.splitlines()[-1].startswith(
        outcome.finished.verdict.label.upper()
    )


def _text(html: str) -> str:
    """The text of an HTML page, tags dropped and entities read."""
    return unescape(re.sub(r"<[^>]+>", " ", html))
