from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from rich.console import Console

from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import JUnitReporter
from pipeline_check.reporting.registry import build_handlers
from pipeline_check.verdict.events import Injected, Note, Observed, RunAborted

if TYPE_CHECKING:
    from conftest import SyntheticRun  # tests/unit/conftest.py

MakeRun = Callable[..., "SyntheticRun"]
THRESHOLDS = ("e2e.p99 < 30s", "stage.api.p95 < 10s", "lost == 0", "duplicates == 0", "throughput >= 90%")


def feed(handler: Any, run: SyntheticRun) -> None:
    for event in run.events:
        handler.handle(event)
    handler.close()


def strict_json(path: Path) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


@pytest.fixture
def lossy(make_run: MakeRun) -> SyntheticRun:
    """200 canaries: 3 lost (one before kafka, two after iceberg), one duplicated, one corrupted."""
    return make_run(
        lost={5: "source", 7: "iceberg", 9: "iceberg"},
        duplicates={"kafka": [11]},
        corrupt=[12],
        thresholds=THRESHOLDS,
    )


# -- JSON ------------------------------------------------------------------------------------------------


def test_json_document(tmp_path: Path, make_run: MakeRun) -> None:
    path = tmp_path / "deep" / "dir" / "report.json"
    run = make_run(thresholds=THRESHOLDS)
    feed(JsonReporter(path), run)
    doc = strict_json(path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert doc["schema_version"] == 2
    assert doc["tool"]["name"] == "pipeline-check"
    assert set(doc) >= {"run", "config", "verdict", "exit_code", "checks", "stages", "e2e", "lost", "duplicates"}
    assert set(doc) >= {"corrupted", "out_of_order", "throughput", "injection", "resolution_s", "settle_s", "notes"}
    assert doc["run"]["run_id"] == run.started.run_id
    assert doc["run"]["stages"] == ["kafka", "consumer", "iceberg", "api"]
    assert doc["run"]["started_at"].endswith("Z") and doc["run"]["started_at"].startswith("2025-06-15T")
    assert doc["run"]["duration_s"] == 12.5
    assert (doc["verdict"], doc["exit_code"], doc["error"]) == ("passed", 0, None)
    assert [c["name"] for c in doc["checks"]] == list(THRESHOLDS)
    assert {c["status"] for c in doc["checks"]} == {"passed"}
    assert set(doc["checks"][0]) == {
        "name",
        "status",
        "observed",
        "observed_text",
        "threshold",
        "samples",
        "detail",
        "kind",
        "rate_bound_pct",
    }
    lost = next(c for c in doc["checks"] if c["name"] == "lost == 0")
    assert lost["rate_bound_pct"] == pytest.approx(1.487, abs=0.01)  # 0 of 200: below 1.49 % at 95 %
    assert [s["name"] for s in doc["stages"]] == ["kafka", "consumer", "iceberg", "api"]
    assert doc["stages"][2]["upstream"] == "kafka"
    assert doc["e2e"]["reached"] == 200 and doc["e2e"]["latency"]["p99"] > 0 and doc["e2e"]["stage"] == "api"
    assert doc["lost"]["count"] == 0 and doc["lost"]["stuck"] == {} and doc["lost"]["rate_bound_pct"] > 0
    assert doc["throughput"]["injected_per_s"] == pytest.approx(99.0)  # what the injector achieved
    assert doc["throughput"]["delivery_steps"] == run.summary.throughput.steps >= 5
    assert doc["stages"][0]["shards"] == [{"shard": 0, "seen": 200, "delivered": 200}]
    assert doc["injection"]["sent"] == 200
    assert doc["resolution_s"] == {"kafka": 0.1, "consumer": 0.1, "iceberg": 0.1, "api": 0.1}
    assert doc["config"] == {"load": {"count": 200, "rate": 100.0}}


def test_every_report_says_what_the_probes_cost(tmp_path: Path, make_run: MakeRun) -> None:
    run = make_run(thresholds=THRESHOLDS)
    path = tmp_path / "report.json"
    feed(JsonReporter(path), run)
    load = strict_json(path)["probe_load"]
    assert set(load) == {"kafka", "consumer", "iceberg", "api"}
    assert load["api"] == {
        "seconds": 12.5,
        "requests": {"requests": 26},
        "bytes": {"requests": 26_000},
        "requests_per_s": {"requests": 2.08},
        "bytes_per_s": 2080.0,
        "text": "2.1 req/s, 2.1 kB/s",
    }
    assert load["iceberg"]["text"] == "0.48 loads/s + 14 GETs/s, 200 kB/s"
    out = io.StringIO()
    feed(ConsoleReporter(Console(file=out, width=300, color_system=None)), run)
    assert (
        "probe load: kafka 2.0 fetches/s + 0.16 admin req/s, 3.2 MB/s; consumer 10 admin req/s, 0 B/s; "
        "iceberg 0.48 loads/s + 14 GETs/s, 200 kB/s; api 2.1 req/s, 2.1 kB/s"
    ) in out.getvalue()


def test_json_failed_run_with_infinity(tmp_path: Path, lossy: SyntheticRun) -> None:
    path = tmp_path / "report.json"
    feed(JsonReporter(path), lossy)
    doc = strict_json(path)
    assert (doc["verdict"], doc["exit_code"]) == ("failed", 1)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["e2e.p99 < 30s"]["observed"] == "inf"  # 3 of 200 never arrived: the p99 is one of them
    assert float(checks["e2e.p99 < 30s"]["observed"]) == float("inf")
    assert checks["e2e.p99 < 30s"]["observed_text"] == "never (not delivered)"
    assert checks["lost == 0"]["observed"] == 3
    assert doc["lost"]["count"] == 3
    assert doc["e2e"]["latency"]["p99"] == "inf"  # figures count undelivered canaries as the check does
    assert {k: len(v) for k, v in doc["lost"]["stuck"].items()} == {"source": 1, "iceberg": 2}
    assert doc["duplicates"] == 1
    assert doc["corrupted"]["count"] == 1
    assert doc["corrupted"]["diffs"][0]["field"] == "price"
    assert doc["corrupted"]["diffs"][0]["label"].endswith("#12")


def test_json_too_few_samples_is_null(tmp_path: Path, make_run: MakeRun) -> None:
    path = tmp_path / "r.json"
    feed(JsonReporter(path), make_run(count=20, thresholds=("e2e.p99 < 30s",)))
    check = strict_json(path)["checks"][0]
    assert (check["status"], check["observed"], check["observed_text"]) == ("inconclusive", None, "n/a")


def test_json_aborted_run(tmp_path: Path, make_run: MakeRun) -> None:
    path = tmp_path / "r.json"
    reporter = JsonReporter(path)
    reporter.handle(make_run().started)
    reporter.handle(RunAborted("interrupted (Ctrl-C)", ExitCode.INTERRUPTED))
    reporter.close()
    doc = strict_json(path)
    assert (doc["verdict"], doc["exit_code"], doc["checks"]) == ("aborted", 130, [])
    assert doc["error"] == "interrupted (Ctrl-C)" and doc["run"]["duration_s"] is None


@pytest.mark.parametrize("kind", [JsonReporter, JUnitReporter])
def test_a_report_path_that_cannot_be_written_is_refused_up_front(tmp_path: Path, kind: Any) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot be written"):
        kind(tmp_path / "file" / "report.out")  # its folder is a file
    with pytest.raises(ConfigError, match="is a directory"):
        kind(tmp_path)


# -- JUnit -----------------------------------------------------------------------------------------------


def junit(tmp_path: Path, run: SyntheticRun) -> ET.Element:
    path = tmp_path / "out" / "junit.xml"
    feed(JUnitReporter(path, suite_name="nightly"), run)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite


def props(element: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in element.findall("properties/property")}


def test_junit(tmp_path: Path, lossy: SyntheticRun) -> None:
    suite = junit(tmp_path, lossy)
    assert suite.get("name") == "nightly"
    attrs = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}
    assert attrs == {"tests": "5", "failures": "3", "errors": "0", "skipped": "0"}  # e2e.p99, lost, duplicates
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == list(THRESHOLDS)
    assert {c.get("classname") for c in cases} == {"pipeline-check.sla"}
    failures = {c.get("name"): c.find("failure") for c in cases}
    lost = failures["lost == 0"]
    assert lost is not None
    assert lost.get("type") == "SLAViolation"
    assert lost.get("message") == "observed 3 vs threshold lost == 0"
    assert lost.text is not None and "3 of 200 not delivered" in lost.text
    assert failures["stage.api.p95 < 10s"] is None
    assert props(cases[2]) == {
        "observed": "3",
        "threshold": "lost == 0",
        "samples": "200",
        "status": "failed",
        "rate_bound_pct": "3.8310",  # 3 of 200: Clopper-Pearson, one-sided 95 %
    }
    suite_props = props(suite)
    assert suite_props["run_id"] == lossy.started.run_id
    assert (suite_props["injected"], suite_props["delivered"], suite_props["lost"]) == ("200", "197", "3")
    assert suite_props["duplicates"] == "1"
    expected = {"scenario", "throughput_per_s", "e2e.p50_s", "e2e.p95_s", "e2e.p99_s"}
    expected |= {f"stage.{s}.{p}_s" for s in ("kafka", "consumer", "iceberg", "api") for p in ("p50", "p95", "p99")}
    assert expected <= set(suite_props)
    assert float(suite_props["stage.iceberg.p50_s"]) == pytest.approx(0.5, abs=0.01)
    assert suite_props["e2e.p99_s"] == "inf"  # as the check counts it: 3 of 200 never arrived
    assert float(suite_props["check[lost == 0].rate_bound_pct"]) > 1.5


def test_junit_not_applicable_and_inconclusive(tmp_path: Path, make_run: MakeRun) -> None:
    run = make_run(thresholds=("lost == 0", "out_of_order == 0", "corrupted == 0"), compare=False)
    suite = junit(tmp_path, run)
    attrs = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}
    assert attrs == {"tests": "3", "failures": "0", "errors": "1", "skipped": "1"}
    cases = suite.findall("testcase")
    skipped = cases[1].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not applicable: ")
    error = cases[2].find("error")
    assert error is not None and error.get("type") == "Inconclusive" and "nothing was compared" in (error.text or "")


def test_junit_aborted_run_has_one_error_case(tmp_path: Path, make_run: MakeRun) -> None:
    path = tmp_path / "junit.xml"
    reporter = JUnitReporter(path)
    reporter.handle(make_run().started)
    reporter.handle(RunAborted("stages.api.base_url='http://x' (endpoint): does not answer", ExitCode.USAGE_ERROR))
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    error = suite.find("testcase/error")
    assert error is not None and "does not answer" in error.get("message", "")


# -- console ---------------------------------------------------------------------------------------------


def console_text(run: SyntheticRun, **kwargs: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    feed(ConsoleReporter(console, **kwargs), run)
    return console.export_text()


def test_console_summary(lossy: SyntheticRun) -> None:
    text = console_text(lossy)
    lines = text.splitlines()
    row = {name: next(line for line in lines if line.strip("│ ").startswith(name + " ")) for name in ("kafka", "api")}
    assert "199/200" in row["kafka"] and "1 " in row["kafka"] and "from source" in row["kafka"]
    assert "197/200" in row["api"] and "from iceberg" in row["api"]
    assert any(line.strip("│ ").startswith("e2e ") and "197/200" in line for line in lines)
    assert "since injection" in text
    assert "FAILED" in text and "never (not delivered)" in text  # the checks table
    assert "3 of 200 canaries lost" in text
    assert "1 stuck after source: run-" in text
    assert "2 stuck after iceberg: run-" in text
    assert "1 canary corrupted" in text and "price expected '" in text
    assert "offered 100.0/s, achieved 99.0/s" in text
    assert "probe resolution: kafka 100.0ms" in text
    assert "coverage: kafka 1/1 partitions (seen/delivered per partition in the JSON/HTML report)" in text
    assert lines[-1] == "FAILED: 2 passed, 3 failed in 12.5s (exit 1)"


@pytest.mark.parametrize(("count", "line"), [
    (1000, "coverage: kafka 200/200 partitions (seen/delivered"),
    (150, "coverage: kafka 150/200 partitions (none in p150, p151, p152, p153, p154, p155, p156, p157, p158, p159 and "
          "40 more) (seen/delivered"),
])  # fmt: skip
def test_console_coverage_is_one_line_at_200_partitions(make_run: MakeRun, count: int, line: str) -> None:
    run = make_run(count=count, partitions=200, thresholds=("coverage == 100%",))
    text = console_text(run)
    assert [x for x in text.splitlines() if x.startswith("coverage:")] == [x for x in text.splitlines() if line in x]
    assert sum(line in x for x in text.splitlines()) == 1
    assert "p7 " not in text and "p7/" not in text and "199/" not in text  # no per-partition figures
    (check,) = run.results
    assert check.detail.endswith("(kafka: 150 of 200 partitions reached)" if count == 150 else "200 partitions reached")
    assert len(check.detail) < 200
    doc_shards = [(c.shard, c.seen) for c in run.summary.stage["kafka"].shards]  # the JSON's per-partition detail
    assert len(doc_shards) == 200 and doc_shards[7] == (7, 5 if count == 1000 else 1)


def test_console_passed(make_run: MakeRun) -> None:
    text = console_text(make_run())
    assert text.splitlines()[-1] == "PASSED: 8 passed in 12.5s (exit 0)"
    assert "lost" not in text.split("checks")[0]


def test_console_nothing_delivered(make_run: MakeRun, tmp_path: Path) -> None:
    run = make_run(count=10, lost=dict.fromkeys(range(10), "source"))
    text = console_text(run)
    assert "10 stuck after source" in text
    assert "0/10" in text
    assert text.splitlines()[-1].startswith("FAILED: ")
    feed(JsonReporter(tmp_path / "r.json"), run)
    latency = strict_json(tmp_path / "r.json")["e2e"]["latency"]
    assert (latency["p50"], latency["n"]) == ("inf", 10)  # ten canaries, none delivered: never, not empty
    junit(tmp_path, run)


def test_plain_progress_is_throttled(make_run: MakeRun) -> None:
    clock = iter([0.0, 0.5, 1.0, 2.5, 3.0, 3.5]).__next__
    console = Console(record=True, width=200, file=io.StringIO())
    reporter = ConsoleReporter(console, live=True, now=clock)  # not a terminal: plain lines
    reporter.handle(make_run().started)
    reporter.handle(Note("subscriber connected"))
    for sent in (10, 20, 30, 40, 50):
        reporter.handle(Injected(sent, 100, 0, 9.5))
    reporter.handle(Observed("kafka", 45, 50))
    text = console.export_text()
    assert "injected 10/100 at 9.5/s" in text
    assert "injected 20/100" not in text and "injected 30/100" not in text  # within 2 s of the last line
    assert "injected 40/100 at 9.5/s" in text  # 2.5 s: due again
    assert "kafka 45/50" not in text  # 3.5 s: 1 s after the last line
    assert "• subscriber connected" in text


def test_live_progress_in_a_terminal(make_run: MakeRun) -> None:
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
    reporter = ConsoleReporter(console)
    run = make_run()
    reporter.handle(run.started)
    assert reporter._progress is not None
    reporter.handle(Note("subscriber connected"))
    reporter.handle(Observed("kafka", 5, 10))
    for event in run.events[1:]:
        reporter.handle(event)
    reporter.close()
    assert reporter._progress is None
    text = console.export_text()
    assert "subscriber connected" in text and "PASSED: 8 passed in 12.5s" in text


def test_build_handlers(tmp_path: Path) -> None:
    console = Console(file=io.StringIO())
    kinds = [
        type(h) for h in build_handlers(console, {"json": tmp_path / "a.json", "junit": tmp_path / "b.xml"}, live=False)
    ]
    assert kinds == [ConsoleReporter, JsonReporter, JUnitReporter]
    assert build_handlers(None, {}) == []


def test_one_throughput_figure_everywhere(tmp_path: Path, make_run: MakeRun) -> None:
    """The check's observed value, the console's headline, JUnit's throughput_per_s and the JSON agree."""
    run = make_run(count=400, thresholds=("throughput >= 90%",))
    figure = run.summary.throughput.delivered
    check = run.finished.results[0]
    assert check.observed == figure
    feed(JsonReporter(tmp_path / "r.json"), run)
    assert strict_json(tmp_path / "r.json")["throughput"]["delivered_per_s"] == figure
    feed(JUnitReporter(tmp_path / "j.xml"), run)
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["throughput_per_s"] == f"{figure:.3f}"
    assert f"delivered {figure:.1f}/s" in console_text(run) and check.observed_text == f"{figure:.1f}/s"
