"""A stage type, a reporter and a feed dialect added from outside the package, each one module plus one
registration (in this process, or as an installed distribution's entry point), reach every part of the tool
that uses them: the run modes, the contract check, cleanup, the config, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.backends.capabilities import INJECTORS, STAGE_TYPES
from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.websocket.dialects import DIALECTS
from pipeline_check.backends.websocket.injector import WebSocketInjector, WebSocketSettings
from pipeline_check.canary.trades import Trade
from pipeline_check.cli import main
from pipeline_check.config import load_config
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.core.plugins import Registry
from pipeline_check.reporting.registry import REPORTERS, build_handlers
from pipeline_check.runs.driver import drive, make_run, run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.status import Status
from tests.support import dialects, memory, reporters, warehouse
from tests.support.memory import PIPES
from tests.unit.test_plugins import distribution

ROOT = Path(__file__).parents[2]
WAREHOUSE = """
[source]
type = "memory"

[stages.kafka]
type = "memory"
delay = 0.005

[stages.warehouse]
type = "warehouse"
upstream = "kafka"
table = "{table}"

[load]
count = 100
rate = 500
settle = 0
drain_timeout = "1s"

[sla]
thresholds = ["e2e.p99 < 30s", "lost == 0", "incomplete == 0"]

[passive]
window = "1s"
thresholds = ["freshness.warehouse.max < 30s"]

[contract.warehouse]
columns = {{ trade_id = {{ type = "long", required = true }}, price = "{price}" }}
"""


@pytest.fixture
def scoped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made in a test are undone after it (other tests see the built-in names only)."""
    registries: list[Registry[Any]] = [
        STAGE_TYPES.probes,
        STAGE_TYPES.samplers,
        STAGE_TYPES.contracts,
        STAGE_TYPES.cleanups,
        STAGE_TYPES.loads,
        INJECTORS,
        REPORTERS,
        DIALECTS,
    ]
    for registry in registries:
        monkeypatch.setattr(registry, "_builtins", dict(registry._builtins))
        monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    monkeypatch.setattr(REPORTERS, "_help", dict(REPORTERS._help))
    yield


def warehouse_config(tmp_path: Path, price: str = "decimal(18,8)") -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(WAREHOUSE.format(table=f"t{time.monotonic_ns()}", price=price))
    return path


# -- a stage type ------------------------------------------------------------------------------------------


def test_a_stage_type_from_outside_is_probed_by_an_injected_run(tmp_path: Path, scoped: None) -> None:
    memory.register()
    warehouse.register()
    outcome = run(load_config(warehouse_config(tmp_path), {}))
    summary = outcome.finished.summary
    assert outcome.exit_code == ExitCode.OK, outcome.finished.results
    assert summary is not None and summary.final == "warehouse" and summary.delivered == 100


def test_a_stage_type_from_outside_is_sampled_by_a_passive_run(tmp_path: Path, scoped: None) -> None:
    memory.register()
    warehouse.register()
    config = load_config(warehouse_config(tmp_path), {})
    clock = Clock()
    PIPES["default"].clear()

    async def passive() -> Any:
        async def feed() -> None:  # the pipeline's own data keeps arriving while the run samples
            for i in range(200):
                PIPES["default"].append((clock.now(), Trade("BTCUSDT", i, "1.0", "1.0", False, 0)))
                await asyncio.sleep(0.01)

        feeding = asyncio.create_task(feed())
        try:
            return await drive(lambda: make_run(Plan.build(config, passive=True)))
        finally:
            feeding.cancel()

    done = asyncio.run(passive())
    (result,) = done.results
    assert (result.threshold, result.status) == ("freshness.warehouse.max < 30s", Status.PASSED), result.detail
    assert done.passive is not None and [s.stage for s in done.passive.stages] == ["warehouse"]
    assert "stage kafka: no passive sampler for type memory; not sampled" in done.notes


def test_a_stage_type_from_outside_holds_its_contract(
    tmp_path: Path, scoped: None, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.register()
    warehouse.register()
    assert main(["contract", "-c", str(warehouse_config(tmp_path))]) == ExitCode.OK
    assert "PASSED: 1 passed" in capsys.readouterr().out
    assert main(["contract", "-c", str(warehouse_config(tmp_path, price="double"))]) == ExitCode.VERDICT_FAILED
    assert "warehouse column price: expected double, found decimal(18,8)" in capsys.readouterr().out
    assert main(["contract", "--snapshot", "-c", str(warehouse_config(tmp_path))]) == ExitCode.OK
    assert 'price = { type = "decimal(18,8)", required = false }' in capsys.readouterr().out
    text = warehouse_config(tmp_path).read_text() + '[contract.kafka]\nfields = { p = "string" }\n'
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match="a stage of type memory holds no contract part"):
        load_config(tmp_path / "bad.toml", {})
    fields = warehouse_config(tmp_path).read_text().split("[contract.warehouse]")[0] + "[contract.warehouse]\n"
    (tmp_path / "bad.toml").write_text(fields + 'fields = { p = "string" }\n')
    with pytest.raises(ConfigError, match="a stage of type warehouse holds columns"):
        load_config(tmp_path / "bad.toml", {})


def test_a_stage_type_from_outside_is_cleaned_up(
    tmp_path: Path, scoped: None, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.register()
    warehouse.register()
    config = warehouse_config(tmp_path)
    assert run(load_config(config, {})).exit_code == ExitCode.OK
    assert main(["cleanup", "-c", str(config), "--all-canaries"]) == 0
    assert "100 canary rows of 1 run would be deleted" in capsys.readouterr().out
    assert main(["cleanup", "-c", str(config), "--all-canaries", "--apply"]) == 0
    assert "deleted 100 canary rows" in capsys.readouterr().out
    assert main(["cleanup", "-c", str(config), "--all-canaries"]) == 0
    assert "no canary rows of every canary" in capsys.readouterr().out


# -- a reporter --------------------------------------------------------------------------------------------


def test_a_reporter_from_outside_is_built_by_name_and_configured_in_report(tmp_path: Path, scoped: None) -> None:
    reporters.register()
    assert [type(h).__name__ for h in build_handlers(None, {"csv": tmp_path / "r.csv"})] == ["CsvReporter"]
    memory.register()
    warehouse.register()
    path = warehouse_config(tmp_path)
    path.write_text(path.read_text() + f'[report]\ncsv = "{tmp_path / "from-config.csv"}"\n')
    config = load_config(path, {})
    assert config.report.path("csv") == tmp_path / "from-config.csv"
    assert config.redacted()["report"] == {
        "json": None,
        "junit": None,
        "html": None,
        "csv": str(tmp_path / "from-config.csv"),
    }


def test_a_reporter_distribution_adds_its_option_and_report_key(tmp_path: Path) -> None:
    site = tmp_path / "site"
    distribution(
        site,
        "pc-csv-reporter",
        "[pipeline_check.reporters]\ncsv = tests.support.reporters:CsvReporter\n"
        "[pipeline_check.injectors]\ndemo = tests.support.memory:MemoryInjector\n"
        "[pipeline_check.probes]\ndemo = tests.support.memory:MemoryProbe\n",
    )
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[source]\ntype = "demo"\n[stages.kafka]\ntype = "demo"\n[load]\ncount = 20\nrate = 200\nsettle = 0\n'
        f'[sla]\nthresholds = ["lost == 0"]\n[report]\ncsv = "{tmp_path / "b.csv"}"\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    command = [
        sys.executable,
        "-m",
        "pipeline_check.cli",
        "validate",
        "-c",
        str(config),
        "--csv",
        str(tmp_path / "a.csv"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "a.csv").read_text() == "threshold,status,observed\nlost == 0,passed,0\n"
    assert not (tmp_path / "b.csv").exists()  # the option wins over [report]


# -- a feed dialect ----------------------------------------------------------------------------------------


def test_a_dialect_from_outside_is_a_source_setting_and_serves_the_feed(tmp_path: Path, scoped: None) -> None:
    with pytest.raises(ValueError, match="Input should be 'binance' or 'kraken'"):
        WebSocketSettings(dialect="echo", port=1)
    dialects.register()
    path = tmp_path / "pipeline.toml"
    path.write_text(
        '[source]\ndialect = "echo"\nport = 1\n[stages.kafka]\nbootstrap = "b:1"\ntopic = "t"\nfields = { x = "x" }\n'
    )
    config = load_config(path, {})
    assert "x" in WebSocketInjector.sent_fields(config.source.settings)
    injector = INJECTORS.get("websocket")(config.source.settings, InjectorContext(Clock(), lambda _: None))
    assert type(injector.dialect).__name__ == "EchoDialect"
    trade = Trade("BTCUSDT", 7, "1.5", "2.0", True, 1_700_000_000_000)
    assert injector.sent_record(trade)["x"] == 7  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="Input should be 'binance', 'echo' or 'kraken'"):
        WebSocketSettings(dialect="coinbase", port=1)


def test_a_dialect_distribution_is_selected_by_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    distribution(site, "pc-echo-dialect", "[pipeline_check.dialects]\necho = tests.support.dialects:EchoDialect\n")
    script = (
        "from pipeline_check.backends.websocket.injector import WebSocketInjector, WebSocketSettings\n"
        "settings = WebSocketSettings(dialect='echo', port=1)\n"
        "from pipeline_check.backends.injector import InjectorContext\n"
        "from pipeline_check.core.clock import Clock\n"
        "injector = WebSocketInjector(settings, InjectorContext(Clock(), print))\n"
        "print(type(injector.dialect).__name__, 'x' in WebSocketInjector.sent_fields(settings))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "EchoDialect True\n"
