"""Passive runs on scripted samplers: active, stale and idle stages, clock skew, failed looks, the
mode rules of thresholds, and the reports of a run that injected nothing."""

from __future__ import annotations

import asyncio
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from rich.console import Console

from pipeline_check.backends.capabilities import SAMPLERS
from pipeline_check.backends.sampler import Reading, SamplerContext
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import JUnitReporter
from pipeline_check.runs.driver import drive
from pipeline_check.runs.injected import Run
from pipeline_check.runs.passive import PassiveRun
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.events import Event, RunAborted, RunFinished
from pipeline_check.verdict.status import Status
from tests.support import memory
from tests.support.memory import MemoryStageSettings

Script = Callable[[int], Reading]
SCRIPTS: dict[str, Script] = {}
CLOSED: list[str] = []

BASE = """
[source]
type = "memory"

[stages.kafka]
type = "memory"
pipe = "kafka"

[stages.iceberg]
type = "memory"
pipe = "iceberg"

[passive]
window = "{window}"
interval = "10ms"
{passive}
"""


class ScriptedSampler:
    """Says what ``SCRIPTS[settings.pipe]`` says at its n-th look."""

    Settings: ClassVar[type[PluginSettings]] = MemoryStageSettings
    provides: ClassVar[tuple[str, ...]] = ("freshness", "lag")

    def __init__(self, settings: MemoryStageSettings, ctx: SamplerContext) -> None:
        self.pipe = settings.pipe
        self.looks = 0

    async def start(self) -> None:
        pass

    async def sample(self) -> Reading:
        self.looks += 1
        return SCRIPTS[self.pipe](self.looks)

    async def close(self) -> None:
        CLOSED.append(self.pipe)


def moving(age: float = 0.2) -> Script:
    return lambda n: Reading({"freshness": age, "lag": 0.0}, position=n, detail="moving")


def still(age: float = 5.0) -> Script:
    return lambda n: Reading({"freshness": age + n / 1000, "lag": 0.0}, position=0, detail="still")


@pytest.fixture(autouse=True)
def plugins() -> None:
    memory.register()
    SAMPLERS.add("memory", f"{__name__}:ScriptedSampler")
    SCRIPTS.clear()
    CLOSED.clear()


def config(tmp_path: Path, passive: str = "", extra: str = "", window: str = "300ms") -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(BASE.format(passive=passive, window=window) + extra)
    return load_config(path, {})


THRESHOLDS = 'thresholds = ["freshness.kafka.max < 1s", "freshness.iceberg.max < 1s", "lag.iceberg.p50 < 1s"]'


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def passive_run(cfg: PipelineConfig, *handlers: object) -> RunFinished:
    return asyncio.run(drive(lambda: PassiveRun(Plan.build(cfg, passive=True)), handlers))  # type: ignore[arg-type]


def by_threshold(done: RunFinished) -> dict[str, tuple[Status, str]]:
    return {r.threshold: (r.status, r.detail) for r in done.results}


def test_a_flowing_pipeline_passes(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=moving(), iceberg=moving(0.4))
    done = passive_run(config(tmp_path, THRESHOLDS))
    assert done.verdict == Status.PASSED and done.exit_code == ExitCode.OK
    assert done.summary is None and done.passive is not None
    assert [s.state for s in done.passive.stages] == ["active", "active"]
    assert all(s.samples >= 10 for s in done.passive.stages)  # 300 ms at 10 ms
    assert done.passive.stages[1].series["freshness"]["max"] == pytest.approx(0.4)
    assert sorted(CLOSED) == ["iceberg", "kafka"]


def test_a_stage_that_stops_while_data_arrives_upstream_fails_naming_it_and_its_age(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=moving(), iceberg=still(5.0))
    done = passive_run(config(tmp_path, THRESHOLDS))
    checks = by_threshold(done)
    assert checks["freshness.kafka.max < 1s"][0] == Status.PASSED
    status, detail = checks["freshness.iceberg.max < 1s"]
    assert status == Status.FAILED
    assert "no new data at iceberg" in detail and "upstream of it had new data" in detail
    assert "freshness at the end 5." in detail
    assert done.verdict == Status.FAILED and done.exit_code == ExitCode.VERDICT_FAILED
    assert [s.state for s in done.passive.stages] == ["active", "stale"]  # type: ignore[union-attr]


def test_an_idle_pipeline_is_inconclusive_not_passed(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=still(0.1), iceberg=still(0.1))  # fresh enough, but nothing moves
    done = passive_run(config(tmp_path, THRESHOLDS))
    assert {status for status, _ in by_threshold(done).values()} == {Status.INCONCLUSIVE}
    assert "looks idle" in by_threshold(done)["freshness.kafka.max < 1s"][1]
    assert done.verdict == Status.INCONCLUSIVE and done.exit_code == ExitCode.VERDICT_FAILED


def test_a_backlog_makes_a_still_stage_stale_not_idle(tmp_path: Path) -> None:
    SCRIPTS.update(
        kafka=still(9.0),
        iceberg=lambda n: Reading({"freshness": 9.0, "lag": 7.0}, position=0, backlog=True),
    )
    checks = by_threshold(passive_run(config(tmp_path, THRESHOLDS)))
    assert checks["lag.iceberg.p50 < 1s"][0] == Status.FAILED
    assert "data waits for it" in checks["lag.iceberg.p50 < 1s"][1]
    assert checks["freshness.kafka.max < 1s"][0] == Status.INCONCLUSIVE


def test_timestamps_in_the_future_are_flagged_as_clock_skew(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=lambda n: Reading({"freshness": 0.0}, position=n, ahead_s=2.5), iceberg=moving())
    recorder = Events()
    done = passive_run(config(tmp_path, THRESHOLDS), recorder)
    assert done.passive is not None and len(done.passive.skew) == 1
    assert "clock skew at kafka" in done.passive.skew[0] and "2.500s in the future" in done.passive.skew[0]
    assert any("clock skew at kafka" in n for n in done.notes)


def test_failed_looks_are_noted_and_counted(tmp_path: Path) -> None:
    def flaky(n: int) -> Reading:
        if n % 2:
            raise RuntimeError("broker restarting")
        return Reading({"freshness": 0.1}, position=n)

    SCRIPTS.update(kafka=flaky, iceberg=moving())
    done = passive_run(config(tmp_path, THRESHOLDS))
    kafka = done.passive.stages[0]  # type: ignore[union-attr]
    assert kafka.failed >= 5 and kafka.samples >= 5
    assert any("kafka: a look failed (RuntimeError: broker restarting)" in n for n in done.notes)
    assert by_threshold(done)["freshness.kafka.max < 1s"][0] == Status.PASSED


def test_a_setting_the_stage_contradicts_aborts_the_run(tmp_path: Path) -> None:
    def contradicts(n: int) -> Reading:
        raise ConfigError("stages.kafka.topic", "nope", "no such topic", "fix it")

    SCRIPTS.update(kafka=contradicts, iceberg=moving())
    recorder = Events()
    with pytest.raises(ConfigError, match="no such topic"):
        passive_run(config(tmp_path, THRESHOLDS), recorder)
    assert isinstance(recorder.events[-1], RunAborted)
    assert sorted(CLOSED) == ["iceberg", "kafka"]  # every sampler closed all the same


def test_percentiles_need_their_samples(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=moving(), iceberg=moving())
    cfg = config(tmp_path, 'thresholds = ["freshness.kafka.p99 < 1s"]', window="100ms")
    status, detail = by_threshold(passive_run(cfg))["freshness.kafka.p99 < 1s"]
    assert status == Status.INCONCLUSIVE
    assert "too few samples for p99 of freshness.kafka" in detail and "passive.window" in detail


# -- thresholds and modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("passive", "extra", "message"),
    [
        ('thresholds = ["lost == 0"]', "", "passive.thresholds='lost == 0' (str): judges injected canaries"),
        ("", '[sla]\nthresholds = ["freshness.kafka.p95 < 5s"]', "is sampled by passive runs only"),
        ('thresholds = ["snapshot_age.kafka.max < 5s"]', "", "stage kafka (type memory) gives no snapshot_age series"),
        ('thresholds = ["api.response.p95 < 1s"]', "", "no stage is of type api"),
        ('thresholds = ["contract"]', "", "there is no [contract] section"),
        ('thresholds = ["freshness.nope.max < 1s"]', "", "unknown stage 'nope'"),
        ('thresholds = ["lag_records.kafka.max < 1s"]', "", "'1s' is not a whole number"),
        ("", '[contract.kafka]\ncolumns = { a = "long" }', "a stage of type memory holds no contract part"),
        ("", '[contract.nope]\nfields = { a = "string" }', "contract.nope='nope' (str): is not a configured stage"),
        ("", '[scenarios.p]\nmode = "passive"\nthresholds = ["e2e.p99 < 1s"]', "scenarios.p.thresholds="),
    ],
)
def test_thresholds_must_suit_the_mode(tmp_path: Path, passive: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, passive, extra)
    assert message in str(caught.value)


def test_default_passive_thresholds_and_overrides(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.passive_thresholds() == ("freshness.iceberg.p95 < 30s", "lag.kafka.p95 < 30s", "lag.iceberg.p95 < 30s")
    more = cfg.with_overrides(None, passive=True, thresholds=("freshness.kafka.max < 2s",))
    assert [t.text for t in more.thresholds_for(None, passive=True)][-1] == "freshness.kafka.max < 2s"
    assert [t.text for t in more.thresholds_for(None)] == [t.text for t in cfg.thresholds_for(None)]
    with pytest.raises(ConfigError, match="judges injected canaries"):
        cfg.with_overrides(None, passive=True, thresholds=("lost == 0",))
    assert cfg.passive.sample_interval == pytest.approx(0.01)
    assert config(tmp_path, window="30s").passive.model_copy(update={"interval": None}).sample_interval == 0.2


def test_a_passive_scenario_is_not_run_by_the_engine_and_passive_needs_one(tmp_path: Path) -> None:
    cfg = config(tmp_path, extra='[scenarios.gate]\nmode = "passive"\nthresholds = ["freshness.kafka.max < 9s"]')
    assert cfg.is_passive("gate") and not cfg.is_passive(None)
    with pytest.raises(ConfigError, match="is a passive scenario"):
        Run(Plan.build(cfg, "gate"))
    with pytest.raises(ConfigError, match=r"--scenario='smoke' .*is not a passive scenario"):
        cfg.is_passive("smoke", flag=True)
    SCRIPTS.update(kafka=moving(), iceberg=moving())
    done = asyncio.run(drive(lambda: PassiveRun(Plan.build(cfg, "gate")), ()))
    assert [r.threshold for r in done.results][-1] == "freshness.kafka.max < 9s"


# -- reports ----------------------------------------------------------------------------------------------


def test_reports_of_a_passive_run(tmp_path: Path) -> None:
    SCRIPTS.update(kafka=moving(), iceberg=still(5.0))
    cfg = config(tmp_path, THRESHOLDS)
    out = io.StringIO()
    handlers = [
        JsonReporter(tmp_path / "r.json"),
        JUnitReporter(tmp_path / "r.xml"),
        ConsoleReporter(Console(file=out, width=200), live=False),
    ]
    passive_run(cfg, *handlers)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["run"]["mode"] == "passive" and doc["run"]["count"] == 0 and doc["run"]["window_s"] == 0.3
    assert doc["verdict"] == "failed" and "stages" not in doc and "lost" not in doc
    stages = {s["stage"]: s for s in doc["passive"]["stages"]}
    assert stages["iceberg"]["state"] == "stale" and stages["iceberg"]["series"]["freshness"]["max"] > 5
    assert "own timestamps and clocks" in doc["passive"]["basis"]
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").getroot().iter("property")}
    assert props["iceberg.state"] == "stale" and float(props["freshness.iceberg.p95_s"]) > 5
    text = out.getvalue()
    assert "passive, sampling kafka, iceberg for 0.3s (injects nothing)" in text
    assert "stale" in text and "own timestamps and clocks" in text and "FAILED" in text


# -- command line -----------------------------------------------------------------------------------------


def test_validate_passive_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline_check.cli import main

    SCRIPTS.update(kafka=moving(), iceberg=moving())
    config(tmp_path, THRESHOLDS)
    path = str(tmp_path / "pipeline.toml")
    assert main(["validate", "--passive", "-c", path, "--json", str(tmp_path / "out.json")]) == ExitCode.OK
    assert json.loads((tmp_path / "out.json").read_text())["run"]["mode"] == "passive"
    assert main(["validate", "--passive", "-c", path, "--count", "5"]) == ExitCode.USAGE_ERROR
    assert "a passive run injects nothing" in capsys.readouterr().err
    assert main(["contract", "-c", path]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert "pipeline.toml: contract=None (NoneType): there is no [contract] section" in err
    assert "contract --snapshot" in err


def test_an_injected_run_through_the_gates_entry_point_is_the_engine_run(tmp_path: Path) -> None:
    from pipeline_check.runs.driver import run_async

    path = tmp_path / "injected.toml"
    path.write_text(
        '[source]\ntype = "memory"\n[stages.kafka]\ntype = "memory"\n[stages.iceberg]\ntype = "memory"\n'
        '[load]\ncount = 50\nrate = 500\nsettle = 0\ndrain_timeout = "5s"\n[sla]\nthresholds = ["lost == 0"]\n'
    )
    cfg = load_config(path, {})
    done = asyncio.run(run_async(cfg)).finished
    assert [r.threshold for r in done.results] == ["lost == 0"] and done.verdict == Status.PASSED
    assert done.summary is not None and done.summary.delivered == 50
    assert done.passive is None and done.responses is None and done.contract is None  # no API stage, no contract
