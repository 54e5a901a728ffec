"""The plan of a run: worked out once from the config and the command line; the run it picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import ConfigError
from pipeline_check.runs.driver import make_run
from pipeline_check.runs.gated import GatedRun
from pipeline_check.runs.injected import Run
from pipeline_check.runs.passive import PassiveRun
from pipeline_check.runs.plan import Plan
from tests.support import memory

CONFIG = """
[source]
type = "memory"

[stages.kafka]
type = "memory"

[stages.api]
base_url = "http://127.0.0.1:9"
query = "/v1/trades?symbol={symbol}&start_time={start_ms}&end_time={end_ms}"
tag_field = "trade_id"

[load]
count = 100
rate = 50

[sla]
thresholds = ["e2e.p99 < 30s", "lost == 0"]

[passive]
thresholds = ["freshness.api.p95 < 30s"]

[scenarios.gate]
thresholds = ["api.response.p95 < 500ms", "contract"]
load = { count = 200 }

[scenarios.loaded]
load = { api_concurrency = 4 }

[scenarios.watchful]
mode = "passive"

[scenarios.broken]
inherit_thresholds = false
thresholds = ["lost == 0"]
faults = [{ at = "1s", target = "echo", action = "command", command = "true" }]

[contract.api]
fields = { trade_id = "integer" }
"""


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG)
    return load_config(path, {})


def texts(thresholds: tuple[object, ...]) -> list[str]:
    return [t.text for t in thresholds]  # type: ignore[attr-defined]


def test_a_plain_plan_is_injected_and_judges_the_sla(config: PipelineConfig) -> None:
    plan = Plan.build(config)
    assert (plan.mode, plan.scenario, plan.load.count, plan.faults) == ("injected", None, 100, ())
    assert texts(plan.thresholds) == texts(plan.checks) == ["e2e.p99 < 30s", "lost == 0"]
    assert plan.gates == ()
    assert type(make_run(plan)) is Run


def test_the_production_gates_make_a_gated_plan_judged_after_the_checks(config: PipelineConfig) -> None:
    plan = Plan.build(config, "gate")
    assert plan.mode == "gated" and plan.load.count == 200
    assert texts(plan.checks) == ["e2e.p99 < 30s", "lost == 0"]
    assert texts(plan.gates) == ["api.response.p95 < 500ms", "contract"]
    run = make_run(plan)
    assert isinstance(run, GatedRun)
    assert texts(tuple(run.thresholds)) == texts(plan.checks) and texts(tuple(run.gated)) == texts(plan.gates)


def test_an_api_load_alone_makes_a_gated_plan(config: PipelineConfig) -> None:
    plan = Plan.build(config, "loaded")
    assert plan.mode == "gated" and plan.load.api_concurrency == 4 and plan.gates == ()


def test_a_passive_plan_from_the_scenario_or_the_flag(config: PipelineConfig) -> None:
    for plan in (Plan.build(config, "watchful"), Plan.build(config, passive=True)):
        assert plan.mode == "passive" and plan.passive
        assert texts(plan.thresholds) == ["freshness.api.p95 < 30s"]
        assert isinstance(make_run(plan), PassiveRun)
    with pytest.raises(ConfigError, match="is not a passive scenario"):
        Plan.build(config, "gate", passive=True)
    with pytest.raises(ConfigError, match="is a passive scenario"):
        Run(Plan.build(config, "watchful"))


def test_overrides_and_extra_thresholds_go_into_the_plan(config: PipelineConfig) -> None:
    plan = Plan.build(config, "gate", thresholds=("duplicates == 0",), count=7, allow_inconclusive=True)
    assert plan.load.count == 7 and plan.allow_inconclusive
    assert texts(plan.checks) == ["e2e.p99 < 30s", "lost == 0", "duplicates == 0"]
    assert texts(Plan.build(config, passive=True, thresholds=("freshness.api.max < 1m",)).thresholds)[-1] == (
        "freshness.api.max < 1m"
    )


def test_the_plan_carries_the_scenario_faults(config: PipelineConfig) -> None:
    plan = Plan.build(config, "broken")
    assert [step.label for step in plan.faults] == ["command echo"]
    assert texts(plan.thresholds) == ["lost == 0"]


def test_the_contract_command_plan_checks_the_contract_only(config: PipelineConfig) -> None:
    plan = Plan.contract_check(config)
    assert plan.passive and texts(plan.thresholds) == ["contract"]
    run = make_run(plan)
    assert isinstance(run, PassiveRun) and run.samplers == []
