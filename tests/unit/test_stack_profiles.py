"""Stack files that extend another (profiles): merge rules, folders, errors; the lakehouse profile as declared;
``--profile`` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_check.cli import main
from pipeline_check.errors import ConfigError
from pipeline_check.stack.spec import load_stack, profile_file

COMPOSE = Path(__file__).parents[2] / "compose"

BASE = """
[stack]
name = "base"
run_dir = "run"
[ports]
a = 1001
[env]
SHARED = "x"
KEPT = "k"
[services.a]
command = ["run-a"]
health = { tcp = "127.0.0.1:{port.a}" }
env = { OWN = "1" }
[services.b]
command = ["run-b", "{compose_dir}"]
depends_on = ["a"]
health = { tcp = "127.0.0.1:{port.a}" }
"""

OVERLAY = """
[stack]
extends = "../stack.toml"
name = "overlay"
run_dir = "../run-overlay"
[ports]
c = 1003
[env]
SHARED = "y"
[services.c]
command = ["run-c"]
health = { http = "http://127.0.0.1:{port.c}/health" }
[services.b]
depends_on = ["a", "c"]
env = { MORE = "{port.c}" }
"""


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    (tmp_path / "stack.toml").write_text(BASE)
    (tmp_path / "profiles").mkdir()
    path = tmp_path / "profiles" / "extra.toml"
    path.write_text(OVERLAY)
    return path


def test_an_overlay_merges_into_the_stack_it_extends(overlay: Path, tmp_path: Path) -> None:
    spec = load_stack(overlay)
    assert spec.name == "overlay"
    assert spec.compose_dir == tmp_path  # services run from the base file's folder
    assert spec.run_dir == tmp_path / "run-overlay"  # relative to the file that sets it
    assert dict(spec.ports) == {"a": 1001, "c": 1003}
    assert list(spec.services) == ["a", "b", "c"]
    assert spec.start_order() == ["a", "c", "b"]  # lists are replaced: b now waits for c
    assert spec.services["b"].env == {"SHARED": "y", "KEPT": "k", "MORE": "1003"}  # tables merge key by key
    assert spec.services["a"].env == {"SHARED": "y", "KEPT": "k", "OWN": "1"}
    assert spec.services["b"].command == ("run-b", str(tmp_path))


def test_profile_file_is_found_beside_the_stack_file(overlay: Path, tmp_path: Path) -> None:
    assert profile_file("extra", tmp_path / "stack.toml") == overlay
    with pytest.raises(ConfigError, match=r"--profile='nope' .*use one of \['extra'\]"):
        profile_file("nope", tmp_path / "stack.toml")


def test_extends_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    missing.write_text('[stack]\nextends = "nowhere.toml"\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"stack.extends=.*nowhere.toml.*does not exist"):
        load_stack(missing)
    loop = tmp_path / "loop.toml"
    loop.write_text('[stack]\nextends = "loop.toml"\nname = "x"\n')
    with pytest.raises(ConfigError, match="extends itself"):
        load_stack(loop)


def test_the_lakehouse_profile_as_declared() -> None:
    spec = load_stack(profile_file("lakehouse", COMPOSE / "stack.toml"))
    assert spec.compose_dir == COMPOSE
    assert spec.run_dir == (COMPOSE.parent / ".stack" / "lakehouse").resolve()
    assert spec.start_order() == [
        "kafka",
        "toxiproxy",
        "s3",
        "catalog",
        "registry",
        "consumer",
        "ingestor",
        "api",
        "feed",
    ]
    shared = {
        "ICEBERG_CATALOG_URI": f"http://127.0.0.1:{spec.ports['catalog']}",
        "ICEBERG_WAREHOUSE": "s3://lakehouse/warehouse",
    }
    for name in ("consumer", "ingestor", "api"):
        assert shared.items() <= spec.services[name].env.items(), name
    for name in ("consumer", "ingestor"):
        assert spec.services[name].env["RECORD_FORMAT"] == "avro"
    assert spec.services["api"].env["API_ID_FORMAT"] == "BINANCE-{id}"  # the doubled brace is a literal one
    assert spec.services["catalog"].env["LAKEHOUSE_WAREHOUSE"] == spec.services["api"].env["ICEBERG_WAREHOUSE"]
    assert spec.exports["PC_SCHEMA_REGISTRY_URL"] == f"http://127.0.0.1:{spec.ports['registry']}"
    default = load_stack(COMPOSE / "stack.toml")
    assert default.services["consumer"].env["ICEBERG_CATALOG_URI"].startswith("sqlite:///")  # the base is untouched
    assert "RECORD_FORMAT" not in default.services["consumer"].env


def test_cli_profile_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "status", "--profile", "lakehouse", "--run-dir", str(tmp_path)]) == 1  # nothing runs
    out = capsys.readouterr().out
    assert "market-data-lakehouse" in out and "catalog" in out and "registry" in out
    assert main(["stack", "status", "--profile", "nope"]) == 2
    assert "--profile='nope'" in capsys.readouterr().err
