"""Production gates against the local stack: passive freshness with the demo feed running, with the
consumer stopped and with the feed stopped; API response times idle and under concurrent load; the
contract on the reference stack, on a table whose prices are doubles, and from a snapshot."""

from __future__ import annotations

import io
import json
import math
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.schema import Schema
from pyiceberg.types import DecimalType, DoubleType, LongType, NestedField, StringType, TimestamptzType
from rich.console import Console

from pipeline_check.config import PipelineConfig
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.core.errors import ExitCode
from pipeline_check.pytest_plugin import PipelineStack
from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.runs.contract import check_contract, snapshot, to_toml
from pipeline_check.runs.driver import drive, run_async
from pipeline_check.runs.passive import PassiveRun
from pipeline_check.runs.plan import Plan
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.events import RunFinished
from pipeline_check.verdict.response_times import ResponseTimes
from pipeline_check.verdict.status import Status
from tests.e2e.helpers import api_trades, wait_for
from tests.support.report_schema import validate_report

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.freshness]
CONFIG = Path(__file__).parents[2] / "compose" / "pipeline.toml"


def now_ms() -> int:
    return int(time.time() * 1000)


def catalog(stack: PipelineStack) -> Catalog:
    exports = stack.exports
    return load_catalog(
        "local", type="sql", uri=exports["PC_ICEBERG_CATALOG_URI"], warehouse=exports["PC_ICEBERG_WAREHOUSE"]
    )


@pytest.fixture
def demo_feed(local_stack: LocalStack, pipeline_stack: PipelineStack) -> Iterator[LocalStack]:
    """The stack's demo feed running (BTCUSDT and ETHUSDT at 50/s) and its trades reaching the API; it is
    stopped after, so the validator's own feed can take the port again."""
    began = now_ms()
    local_stack.start("feed")
    try:
        wait_for(
            lambda: any(t["trade_time"] >= began for t in api_trades(pipeline_stack.exports, "BTCUSDT", limit=5)),
            90,
            "demo feed trades in the API",
        )
        yield local_stack
    finally:
        local_stack.stop("feed")


def passive(config: PipelineConfig, window: float, *thresholds: str) -> PipelineConfig:
    settings = config.passive.model_copy(update={"window": window, "interval": 0.1, "thresholds": thresholds})
    return config.model_copy(update={"passive": settings})


def checks(done: RunFinished) -> dict[str, Any]:
    return {r.threshold: r for r in done.results}


def test_validate_passive_passes_with_the_demo_feed(
    demo_feed: LocalStack, pipeline_stack: PipelineStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_check.cli import main

    for name, value in pipeline_stack.exports.items():
        monkeypatch.setenv(name, value)
    report = tmp_path / "production.json"
    code = main(["validate", "-c", str(CONFIG), "--scenario", "production", "--json", str(report)])
    doc = json.loads(report.read_text())
    validate_report(doc)  # a real passive run's report follows the bundled schema
    assert code == ExitCode.OK, [(c["threshold"], c["status"], c["detail"]) for c in doc["checks"]]
    assert doc["run"]["mode"] == "passive" and doc["run"]["count"] == 0 and doc["verdict"] == "passed"
    assert {c["threshold"] for c in doc["checks"]} == {
        "freshness.kafka.p95 < 10s", "lag.consumer.p99 < 30s", "freshness.iceberg.max < 60s",
        "freshness.api.max < 60s", "api.response.p95 < 5s", "contract",
    }  # fmt: skip
    assert {s["stage"]: s["state"] for s in doc["passive"]["stages"]} == dict.fromkeys(
        ("kafka", "consumer", "iceberg", "api"), "active"
    )
    assert doc["api_response"]["requests"]["n"] >= 20 and doc["api_response"]["requests"]["p95"] > 0
    # the reference API has no key: the 401/403 parts of the contract are not applicable, and said so
    assert len(doc["contract"]["not_applicable"]) == 2 and doc["contract"]["differences"] == []
    assert all("headers carry no key" in n for n in doc["contract"]["not_applicable"])


@pytest.mark.resilience
def test_validate_passive_fails_naming_the_stage_and_its_age_when_the_consumer_stops(
    demo_feed: LocalStack, pipeline_config: PipelineConfig
) -> None:
    demo_feed.stop("consumer")
    config = passive(
        pipeline_config, 8.0, "freshness.kafka.max < 10s", "freshness.iceberg.max < 5s", "lag.consumer.max < 5s"
    )
    done = run_sync(drive(lambda: PassiveRun(Plan.build(config, passive=True))))
    found = checks(done)
    assert found["freshness.kafka.max < 10s"].status == Status.PASSED  # the feed still fills the topic
    iceberg = found["freshness.iceberg.max < 5s"]
    assert iceberg.status == Status.FAILED and iceberg.observed >= 8.0, iceberg.detail  # older than the window
    assert "no new data at iceberg during the 8s window while upstream of it had new data" in iceberg.detail
    assert f"freshness at the end {iceberg.observed:.3f}s" in iceberg.detail
    lag = found["lag.consumer.max < 5s"]
    assert lag.status == Status.FAILED and lag.observed >= 5.0 and "data waits for it" in lag.detail
    assert done.exit_code == ExitCode.VERDICT_FAILED
    states = {s.stage: s.state for s in done.passive.stages}  # type: ignore[union-attr]
    assert states == {"kafka": "active", "consumer": "stale", "iceberg": "stale", "api": "stale"}


def test_validate_passive_is_inconclusive_when_the_feed_stops(
    demo_feed: LocalStack, pipeline_stack: PipelineStack, pipeline_config: PipelineConfig
) -> None:
    demo_feed.stop("feed")
    table = catalog(pipeline_stack).load_table("market.trades")

    def quiet() -> bool:  # the last trades written: no commit for 3 s
        table.refresh()
        current = table.current_snapshot()
        return current is not None and now_ms() - current.timestamp_ms > 3000

    wait_for(quiet, 60, "the pipeline drained after the feed stopped")
    config = passive(
        pipeline_config, 5.0, "freshness.kafka.max < 60s", "freshness.api.max < 5m", "lag.consumer.max < 30s"
    )
    done = run_sync(drive(lambda: PassiveRun(Plan.build(config, passive=True))))
    assert {r.status for r in done.results} == {Status.INCONCLUSIVE}, [(r.threshold, r.detail) for r in done.results]
    assert all("looks idle" in r.detail for r in done.results)
    assert done.verdict == Status.INCONCLUSIVE and done.exit_code == ExitCode.VERDICT_FAILED
    assert {s.state for s in done.passive.stages} == {"idle"}  # type: ignore[union-attr]


def test_api_response_times_idle_and_under_concurrent_load(pipeline_config: PipelineConfig, tmp_path: Path) -> None:
    sla = pipeline_config.sla.model_copy(update={"thresholds": ("lost == 0", "api.response.p50 < 30s")})
    api = pipeline_config.stage("api")
    assert api is not None
    # a slow answer under load is measured, not cut off at the stage's 5 s timeout (no answer counts as inf)
    patient = api.model_copy(update={"settings": api.settings.model_copy(update={"timeout": 30.0})})
    stages = tuple(patient if s.name == "api" else s for s in pipeline_config.stages)
    config = pipeline_config.model_copy(update={"sla": sla, "stages": stages})
    config = config.with_overrides(None, count=200, rate=50, api_concurrency=8)
    report = tmp_path / "load.json"
    done = run_sync(run_async(config, None, [JsonReporter(report)])).finished
    doc = json.loads(report.read_text())
    validate_report(doc)  # a real gated run's report (API response times, the load) follows the schema
    checks = {c["threshold"]: c for c in doc["checks"]}
    failures = [n for n in doc["notes"] if "failed" in n]
    assert checks["lost == 0"]["status"] == "passed", (checks, failures)
    # judged on the probe's requests (how well the API answers under the load is the machine's to say)
    response = checks["api.response.p50 < 30s"]
    assert response["status"] in ("passed", "failed"), (response, failures)
    timed = doc["api_response"]
    assert float(response["observed"]) == float(timed["requests"]["p50"]) and timed["requests"]["n"] >= 2
    assert timed["concurrency"] == 8
    assert timed["idle"]["n"] == 20 and timed["loaded"]["n"] > 8  # idle measured before the load started
    idle_p95, loaded_p95 = float(timed["idle"]["p95"]), float(timed["loaded"]["p95"])  # "inf": no answer
    assert 0 < idle_p95 < math.inf and loaded_p95 > 0
    assert float(timed["degradation"]) == pytest.approx(loaded_p95 / idle_p95)
    assert timed["freshness_under_load"]["e2e"]["p95"] == doc["e2e"]["latency"]["p95"]
    assert done.responses is not None and done.responses.loaded_failed == timed["loaded_failed"]


def test_the_reference_stack_holds_its_contract(demo_feed: LocalStack, pipeline_config: PipelineConfig) -> None:
    figures = run_sync(check_contract(pipeline_config, ResponseTimes(), now_ms()))
    assert figures.differences == ()
    assert figures.unchecked == ()
    assert "api: 3 status codes" in figures.checked  # 200, 422 and 404; 401 and 403 need a key
    assert [n.split(" (key: ")[1] for n in figures.not_applicable] == [
        "none): stages.api.headers carry no key",
        "wrong): stages.api.headers carry no key",
    ]


@pytest.fixture
def double_prices(pipeline_stack: PipelineStack) -> Iterator[str]:
    """A table beside the reference one whose prices are doubles (what parsing prices through float64
    leaves), dropped after."""
    name = "market.trades_double_prices"
    schema = Schema(
        NestedField(1, "symbol", StringType(), required=True),
        NestedField(2, "trade_id", LongType(), required=True),
        NestedField(3, "price", DoubleType(), required=False),
        NestedField(4, "quantity", DecimalType(18, 8), required=False),
        NestedField(5, "side", StringType(), required=False),
        *(
            NestedField(i, name, TimestamptzType(), required=False)
            for i, name in ((6, "event_time"), (7, "trade_time"), (8, "ingest_time"))
        ),
    )
    cat = catalog(pipeline_stack)
    cat.create_table(name, schema=schema)
    try:
        yield name
    finally:
        cat.drop_table(name)


def test_the_contract_shows_a_readable_diff_when_prices_are_doubles(
    double_prices: str, pipeline_config: PipelineConfig
) -> None:
    section = pipeline_config.stage("iceberg")
    assert section is not None
    moved = section.model_copy(update={"settings": section.settings.model_copy(update={"table": double_prices})})
    config = pipeline_config.model_copy(
        update={
            "stages": tuple(moved if s.name == "iceberg" else s for s in pipeline_config.stages),
            "contract": {"iceberg": pipeline_config.contract["iceberg"]},
        }
    )
    out = io.StringIO()
    console = ConsoleReporter(Console(file=out, width=240), live=False)
    done = run_sync(drive(lambda: PassiveRun(Plan.contract_check(config)), [console]))
    result = checks(done)["contract"]
    assert result.status == Status.FAILED and done.exit_code == ExitCode.VERDICT_FAILED
    assert result.detail.splitlines() == [
        "1 difference from the contract:",
        "iceberg column price: expected decimal(18,8), found double",
    ]
    assert "iceberg column price: expected decimal(18,8), found double" in out.getvalue()


def test_a_snapshot_is_a_contract_the_stack_holds(demo_feed: LocalStack, pipeline_config: PipelineConfig) -> None:
    text = to_toml(run_sync(snapshot(pipeline_config, now_ms())), "pipeline.toml")
    tables = tomllib.loads(text)["contract"]
    assert set(tables) == {"kafka", "iceberg", "api"}
    assert tables["iceberg"]["columns"]["price"] == {"type": "decimal(18,8)", "required": False}
    assert tables["kafka"]["fields"]["p"] == {"type": "string", "required": True}
    assert {(s["path"].split("?")[0], s["status"]) for s in tables["api"]["status"]} == {
        ("/v1/trades", 200), ("/pipeline-check/no-such-path", 404), ("/v1/trades", 422),
    }  # fmt: skip
    contract = {name: StageContract.model_validate(data) for name, data in tables.items()}
    figures = run_sync(
        check_contract(pipeline_config.model_copy(update={"contract": contract}), ResponseTimes(), now_ms())
    )
    assert figures.differences == () and figures.unchecked == ()
