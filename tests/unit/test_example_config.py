"""What a user who installed the package has: an example configuration shipped as package data, printed by
a command, that loads as it is; and messages that point at it rather than at this repository's compose/."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pipeline_check.cli import main
from pipeline_check.config import find_config, load_config
from pipeline_check.config.loading import EXAMPLE, example_config
from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.runs.plan import Plan

ROOT = Path(__file__).parents[2]


def test_the_example_config_ships_prints_and_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"config/{EXAMPLE}" in data["pipeline_check"]
    assert main(["example-config"]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert printed == example_config()
    path = tmp_path / "pipeline.toml"
    path.write_text(printed)
    config = load_config(path, {})  # every ${NAME} has a default: it loads with an empty environment
    assert config.stage_names() == ("kafka", "consumer", "iceberg", "api")
    assert Plan.build(config, "production").passive and Plan.build(config, "freshness").mode == "injected"


def test_no_config_found_points_at_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_CHECK_CONFIG", raising=False)
    (tmp_path / "compose").mkdir()
    (tmp_path / "compose" / "pipeline.toml").write_text(example_config())  # a repository's, not the user's
    with pytest.raises(ConfigError) as missing:
        find_config()
    assert "no pipeline.toml here" in str(missing.value) and "pipeline-check example-config" in str(missing.value)
    assert "compose" not in str(missing.value)
    (tmp_path / "pipeline.toml").write_text(example_config())
    assert find_config() == Path("pipeline.toml")


def test_a_missing_setting_points_at_the_example(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[source]\nhost = "127.0.0.1"\n[stages.kafka]\ntopic = "t"\n')
    with pytest.raises(ConfigError, match=r"is required; add it \(`pipeline-check example-config` prints"):
        load_config(path, {})
