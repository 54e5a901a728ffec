"""stack.toml parsing, placeholders, port overrides, start order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_check.core.errors import ConfigError, StackError
from pipeline_check.stack.spec import load_stack

COMPOSE = Path(__file__).parents[2] / "compose"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return path


MINIMAL = """
[stack]
name = "s"
[ports]
a = 1001
b = 1002
[env]
SHARED = "x:{port.a}"
[services.c]
command = ["run", "{run_dir}/c"]
depends_on = ["b"]
health = { tcp = "127.0.0.1:{port.a}" }
[services.a]
command = ["run-a"]
health = { http = "http://127.0.0.1:{port.a}/health" }
[services.b]
command = ["run-b"]
depends_on = ["a"]
health = { tcp = "127.0.0.1:{port.b}" }
env = { OWN = "{port.b}" }
"""


def test_placeholders_and_overrides(tmp_path: Path) -> None:
    spec = load_stack(write(tmp_path, MINIMAL), run_dir=tmp_path / "run", ports={"a": 2001})
    assert spec.services["c"].command == ("run", f"{tmp_path / 'run'}/c")
    assert spec.services["b"].env == {"SHARED": "x:2001", "OWN": "1002"}
    assert spec.services["a"].health_target == "http://127.0.0.1:2001/health"


def test_start_order_puts_dependencies_first(tmp_path: Path) -> None:
    spec = load_stack(write(tmp_path, MINIMAL), run_dir=tmp_path)
    assert spec.start_order() == ["a", "b", "c"]
    assert spec.start_order({"b"}) == ["a", "b"]
    assert spec.dependents("a") == ["b", "c"]


def test_cycle_is_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace('command = ["run-a"]', 'command = ["run-a"]\ndepends_on = ["c"]')
    with pytest.raises(StackError, match="cycle"):
        load_stack(write(tmp_path, text), run_dir=tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('depends_on = ["a"]', 'depends_on = ["z"]'), "unknown service 'z'"),
        (('"run-a"', '"{nope}"'), "unknown placeholder"),
        (("[services.a]", "[services.a]\nbogus = 1"), "Extra inputs"),
    ],
)
def test_bad_stack_files_name_the_setting(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stack(write(tmp_path, MINIMAL.replace(*change)), run_dir=tmp_path)


def test_unknown_port_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port\.zz"):
        load_stack(write(tmp_path, MINIMAL), run_dir=tmp_path, ports={"zz": 1})


def test_reference_stack_order_and_exports() -> None:
    spec = load_stack(COMPOSE / "stack.toml", run_dir=Path("/run"))
    assert spec.start_order() == ["kafka", "toxiproxy", "consumer", "ingestor", "api", "feed"]
    # the services reach Kafka and the feed through Toxiproxy's links; the validator does not
    ports = spec.ports
    assert spec.services["consumer"].env["KAFKA_BOOTSTRAP"] == f"127.0.0.1:{ports['toxiproxy_consume']}"
    assert spec.services["ingestor"].env["KAFKA_BOOTSTRAP"] == f"127.0.0.1:{ports['toxiproxy_ingest']}"
    assert spec.exports["PC_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{ports['kafka']}"
    assert spec.proxies["feed-ingestor"] == (f"127.0.0.1:{ports['toxiproxy_feed']}", f"127.0.0.1:{ports['feed']}")
    assert spec.toxiproxy == f"http://127.0.0.1:{ports['toxiproxy']}"
    assert [n for n, s in spec.services.items() if s.optional] == ["feed"]
    assert spec.exports["PC_API_URL"] == f"http://127.0.0.1:{spec.ports['api']}"
