"""Third-party injectors and probes, installed as distributions with entry points, selected by ``type``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_check.core.errors import PluginError
from pipeline_check.core.plugins import Registry

ROOT = Path(__file__).parents[2]
CONFIG = """
[source]
type = "demo"

[stages.kafka]
type = "demo"
delay = 0.005

[stages.warehouse]
type = "demo"
upstream = "kafka"
delay = 0.02
fields = { price = "p:decimal" }

[load]
count = 100
rate = 250
settle = 0
[sla]
thresholds = ["e2e.p99 < 30s", "lost == 0", "duplicates == 0", "corrupted == 0", "retracted == 0", "incomplete == 0"]
"""


def distribution(site: Path, name: str, entry_points: str) -> None:
    """A minimal installed distribution: its metadata and entry points, as pip would leave them."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def validate(site: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", "validate", "-c", str(config)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_installed_plugin_distribution_is_selected_by_type(tmp_path: Path) -> None:
    site = tmp_path / "site"
    distribution(
        site,
        "pc-demo-plugin",
        "[pipeline_check.injectors]\ndemo = tests.support.memory:MemoryInjector\n"
        "[pipeline_check.probes]\ndemo = tests.support.memory:MemoryProbe\n",
    )
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    done = validate(site, config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "through kafka → warehouse" in done.stdout and "PASSED" in done.stdout


def test_two_distributions_offering_one_name_is_an_error_naming_both(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for name in ("pc-demo-one", "pc-demo-two"):
        distribution(site, name, "[pipeline_check.probes]\ndemo = tests.support.memory:MemoryProbe\n")
    distribution(site, "pc-demo-source", "[pipeline_check.injectors]\ndemo = tests.support.memory:MemoryInjector\n")
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    done = validate(site, config)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "probe name 'demo' is offered by both pc-demo-" in line and "pc-demo-one 1.0" in line
    assert "pc-demo-two 1.0" in line and len(line.splitlines()) == 1


def test_a_plugin_shadowing_a_built_in_is_an_error(tmp_path: Path) -> None:
    site = tmp_path / "site"
    distribution(site, "pc-shadow", "[pipeline_check.probes]\napi = tests.support.memory:MemoryProbe\n")
    distribution(site, "pc-demo-source", "[pipeline_check.injectors]\ndemo = tests.support.memory:MemoryInjector\n")
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    done = validate(site, config)
    assert done.returncode == 2
    assert "probe name 'api' is offered by both pipeline-check (built in) and pc-shadow 1.0" in done.stderr


def test_a_registered_target_must_carry_a_settings_model() -> None:
    registry: Registry[object] = Registry("probe", "pipeline_check.none", {"bad": "pipeline_check.trace.stages:Route"})
    with pytest.raises(PluginError, match="is not a class with a `Settings` model"):
        registry.get("bad")
    with pytest.raises(PluginError, match="no probe named 'nope'"):
        registry.get("nope")


def test_an_in_process_plugin_may_not_take_a_built_in_name() -> None:
    registry: Registry[object] = Registry(
        "probe", "pipeline_check.none", {"api": "pipeline_check.backends.api.probe:ApiProbe"}
    )
    with pytest.raises(PluginError, match="'api' is taken"):
        registry.add("api", "tests.support.memory:MemoryProbe")
