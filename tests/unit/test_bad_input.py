"""Every bad input a new user tried ends in one line on stderr naming the setting, the value and the
fix, with exit 2 (130 for Ctrl-C), no traceback, and no secret printed; an aborted run still leaves
its JSON (with the error) and a JUnit file with one error case."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from pipeline_check.cli import cli, main
from pipeline_check.core.errors import ExitCode
from tests.support import memory

SECRET = "s3cr3t-T0KEN"
GOOD = """
[source]
type = "memory"
{source}

[stages.api]
type = "memory"
delay = 0.01
fields = {{ price = "p:decimal" }}
{api}

[load]
count = 20
rate = 200
settle = 0
drain_timeout = "1s"
{load}

[sla]
thresholds = ["e2e.p99 < 30s", "lost == 0", "duplicates == 0", "corrupted == 0", "retracted == 0", "incomplete == 0"]
"""


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iceberg_catalog(tmp_path: Path) -> str:
    """A real SQL catalog with a table that has no ``trade_id`` column."""
    uri = f"sqlite:///{tmp_path}/catalog.db"
    catalog = SqlCatalog("local", uri=uri, warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("market")
    schema = Schema(
        NestedField(1, "symbol", StringType(), required=False), NestedField(2, "id", LongType(), required=False)
    )
    table = catalog.create_table("market.trades", schema=schema)
    table.append(pa.table({"symbol": ["X"], "id": [1]}, schema=schema.as_arrow()))
    return uri


def iceberg_stage(uri: str, **extra: str) -> str:
    lines = [f'catalog = {{ type = "sql", uri = "{uri}", warehouse = "file:///nowhere" }}', 'catalog_name = "local"']
    lines += ['table = "market.trades"'] + [f"{k} = {v}" for k, v in extra.items()]
    return "\n[stages.iceberg]\n" + "\n".join(lines) + "\n"


Case = Callable[[Path], tuple[list[str], str]]  # tmp_path -> (argv, text expected in the one line)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return str(path)


def latin1(tmp_path: Path) -> str:
    path = tmp_path / "latin1.toml"
    path.write_bytes("x = 'caf\xe9'".encode("latin-1"))
    return str(path)


def config(tmp_path: Path, *, source: str = "", api: str = "", load: str = "", extra: str = "") -> str:
    return write(tmp_path, GOOD.format(source=source, api=api, load=load) + extra)


CASES: dict[str, Case] = {
    "config is a directory": lambda t: (["validate", "-c", str(t)], "is a directory"),
    "config is not UTF-8": lambda t: (["validate", "-c", latin1(t)], "is not UTF-8 text"),
    "config does not exist": lambda t: (["validate", "-c", str(t / "nope.toml")], "does not exist"),
    "config is not TOML": lambda t: (["validate", "-c", write(t, "[source\n")], "is not valid TOML"),
    "base_url with a port that is not a number": lambda t: (
        [
            "validate",
            "-c",
            config(t, extra='[stages.web]\ntype = "api"\nupstream = "api"\nbase_url = "http://127.0.0.1:abc"\n'),
        ],
        "stages.web.base_url='http://127.0.0.1:abc' (str): is not a URL",
    ),
    "base_url holding a password, malformed": lambda t: (
        [
            "validate",
            "-c",
            config(t, extra=f'[stages.web]\ntype = "api"\nupstream = "api"\nbase_url = "http://u:{SECRET}@h:x"\n'),
        ],
        "stages.web.base_url='http://u:***@h:x'",
    ),
    "fields spec with an unknown comparison": lambda t: (
        ["validate", "-c", write(t, GOOD.format(source="", api="", load="").replace("p:decimal", "p:nonsense"))],
        "stages.api.fields={'price': 'p:nonsense'} (dict): 'nonsense' is not a comparison",
    ),
    "tag_column the table lacks": lambda t: (
        ["validate", "-c", config(t, extra=iceberg_stage(iceberg_catalog(t)))],
        "stages.iceberg.tag_column='trade_id' (str): table market.trades has no such column; columns: symbol, id",
    ),
    "catalog path with a typo": lambda t: (
        ["validate", "-c", config(t, extra=iceberg_stage(f"sqlite:///{t}/catalgo.db"))],
        "no catalog file there (a reader never creates one)",
    ),
    "stack logs with a negative line count": lambda t: (
        ["stack", "logs", "api", "-n", "-5"],
        "-5 is not in the range x>=1",
    ),
    "--json path that cannot be written": lambda t: (
        ["validate", "-c", config(t), "--json", str(Path(config(t)) / "report.json")],
        "--json=",
    ),
    "throughput share that can never pass": lambda t: (
        ["validate", "-c", config(t), "--threshold", "throughput >= 200%"],
        "can never pass (throughput is always between 0 and 100%)",
    ),
    "the same threshold twice": lambda t: (
        ["validate", "-c", config(t), "--threshold", "lost == 0"],
        "--threshold='lost == 0' (str): repeats 'lost == 0' (sla.thresholds)",
    ),
    "an unknown scenario": lambda t: (["validate", "-c", config(t), "--scenario", "smokey"], "did you mean 'smoke'?"),
    "an unknown top-level section": lambda t: (
        ["validate", "-c", config(t, extra="[laod]\ncount = 1\n")],
        "did you mean 'load'?",
    ),
    "an unknown probe type": lambda t: (
        ["validate", "-c", config(t, extra='[stages.x]\ntype = "apii"\nupstream = "api"\n')],
        "stages.x.type='apii' (str): is not a known probe; did you mean 'api'?",
    ),
    "an endpoint refusing connections (API)": lambda t: (
        [
            "validate",
            "-c",
            config(
                t,
                extra=f'[stages.web]\ntype = "api"\nupstream = "api"\nbase_url = "http://u:{SECRET}@127.0.0.1:{closed_port()}"\n',
            ),
        ],
        "does not answer",
    ),
    "an endpoint refusing connections (Kafka)": lambda t: (
        ["validate", "-c", config(t, extra=f'[stages.kafka]\nbootstrap = "127.0.0.1:{closed_port()}"\ntopic = "t"\n')],
        "Kafka: failed after",
    ),
    "a source nobody listens to": lambda t: (
        ["validate", "-c", config(t, source="unreachable = true")],
        "nobody listens",
    ),
    "a bad --rate": lambda t: (["validate", "-c", config(t), "--rate", "0"], "Invalid value for '--rate'"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv, expected = CASES[case](tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE_ERROR, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in out + err and SECRET not in out + err


def test_an_endpoint_error_still_writes_both_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path, junit_path = tmp_path / "v.json", tmp_path / "j.xml"
    port = closed_port()
    extra = f'[stages.web]\ntype = "api"\nupstream = "api"\nbase_url = "http://u:{SECRET}@127.0.0.1:{port}"\n'
    argv = ["validate", "-c", config(tmp_path, extra=extra), "--json", str(json_path), "--junit", str(junit_path)]
    assert main(argv) == ExitCode.USAGE_ERROR
    doc = json.loads(json_path.read_text())
    assert (doc["verdict"], doc["exit_code"]) == ("aborted", 2) and "does not answer" in doc["error"]
    assert SECRET not in json_path.read_text() and SECRET not in junit_path.read_text()
    error = ET.parse(junit_path).getroot().find("testsuite/testcase/error")
    assert error is not None and "does not answer" in error.get("message", "")
    capsys.readouterr()


def test_ctrl_c_exits_130_and_still_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path, junit_path = tmp_path / "v.json", tmp_path / "j.xml"
    argv = [
        "validate",
        "-c",
        config(tmp_path, source="interrupt_after = 5"),
        "--json",
        str(json_path),
        "--junit",
        str(junit_path),
    ]
    assert main(argv) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted"
    doc = json.loads(json_path.read_text())
    assert (doc["verdict"], doc["exit_code"], doc["error"]) == ("aborted", 130, "interrupted (Ctrl-C)")
    assert ET.parse(junit_path).getroot().find("testsuite/testcase/error") is not None


def test_an_internal_error_is_one_line_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["validate", "-c", config(tmp_path, source="crash_after = 3")]
    assert main(argv) == ExitCode.INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: internal error in pipeline-check: RuntimeError: the memory injector broke; "
        "re-run with --debug for the traceback"
    ]
    assert main(["--debug", *argv]) == ExitCode.INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("api", "load", "code", "verdict"),
    [("", "", 0, "PASSED"), ("drop = [4]", "", 1, "FAILED"), ("fields = {}", "", 1, "INCONCLUSIVE")],
)
def test_verdict_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], api: str, load: str, code: int, verdict: str
) -> None:
    text = GOOD.format(source="", api=api, load=load).replace("count = 20\nrate = 200", "count = 100\nrate = 500")
    if api.startswith("fields"):
        text = text.replace('fields = { price = "p:decimal" }\n', "")
    path = write(tmp_path, text)
    assert main(["validate", "-c", path, "--threshold", "e2e.max < 10s"]) == code
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(verdict)
    if verdict == "INCONCLUSIVE":
        assert main(["validate", "-c", path, "--allow-inconclusive"]) == ExitCode.OK


def test_cli_help_through_click() -> None:
    result = CliRunner().invoke(cli, ["validate", "--help"])
    assert result.exit_code == 0
    assert "--allow-inconclusive" in result.output and "130 when interrupted" in result.output
