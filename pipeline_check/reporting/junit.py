"""JUnit XML reporter: one test case per SLA check, for CI systems that chart test results.

::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp hostname>
        <properties> run_id, scenario, injected, delivered, lost, duplicates, corrupted, out_of_order,
                     throughput_per_s, e2e.p50_s .. e2e.p99_s, stage.<name>.p50_s .. stage.<name>.p99_s,
                     check[<threshold>] = "<STATUS> observed=<value>"
        <testcase classname="pipeline-check.sla" name="<threshold>" time="0">
          <properties> observed, threshold, samples, status
          <failure message="observed X vs threshold Y" type="SLAViolation">detail</failure>   FAILED
          <error message="observed X vs threshold Y" type="CheckError">detail</error>         ERROR
          <skipped message="detail"/>                                                        SKIPPED

A check that could not be judged (``ERROR``) is a JUnit *error*, not a failure, so the ``errors``
count means the same as in any other JUnit report. Statistics missing from a run (no canary delivered)
are left out of the properties rather than written as a placeholder. Nothing is written for a run
that ends without ``RunFinished``.
"""

from __future__ import annotations

import datetime as dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline_check.events import Event, RunFinished, RunStarted
from pipeline_check.reporting.json import write_atomically
from pipeline_check.sla import CheckResult, Status

CLASSNAME = "pipeline-check.sla"
PERCENTILES = ("p50", "p95", "p99")


def _properties(parent: ET.Element, items: Iterable[tuple[str, object]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in items:
        ET.SubElement(props, "property", name=name, value=str(value))


def _latencies(prefix: str, stats: Mapping[str, float]) -> list[tuple[str, object]]:
    return [(f"{prefix}.{p}_s", f"{stats[p]:.6f}") for p in PERCENTILES if p in stats]


def figures(done: RunFinished) -> dict[str, object]:
    """A run's figures as flat name -> value: counts, throughput, e2e and per-stage percentiles, and
    each check's outcome (JUnit suite properties; the pytest plugin's ``record_property``)."""
    s = done.summary
    items: list[tuple[str, object]] = [
        ("injected", s.injected),
        ("delivered", s.delivered),
        ("lost", s.lost),
        ("duplicates", s.duplicates),
        ("corrupted", s.corrupted),
        ("out_of_order", s.out_of_order),
        ("throughput_per_s", f"{s.throughput:.3f}"),
        ("offered_per_s", f"{s.offered_rate:.3f}"),
    ]
    items += _latencies("e2e", s.stages[-1].since_injection if s.stages else {})
    for stage in s.stages:
        items += _latencies(f"stage.{stage.name}", stage.latency)
    items += [(f"check[{r.threshold}]", f"{r.status.name} observed={r.observed_text}") for r in done.results]
    return dict(items)


def _testcase(suite: ET.Element, result: CheckResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=CLASSNAME, name=result.threshold, time="0")
    _properties(
        case,
        [
            ("observed", result.observed_text),
            ("threshold", result.threshold),
            ("samples", result.samples),
            ("status", result.status.name),
        ],
    )
    message = f"observed {result.observed_text} vs threshold {result.threshold}"
    if result.status == Status.FAILED:
        ET.SubElement(case, "failure", message=message, type="SLAViolation").text = result.detail
    elif result.status == Status.ERROR:
        ET.SubElement(case, "error", message=message, type="CheckError").text = result.detail
    elif result.status == Status.SKIPPED:
        ET.SubElement(case, "skipped", message=result.detail)


def build_tree(done: RunFinished, started: RunStarted | None, suite_name: str) -> ET.ElementTree[ET.Element]:
    results = done.results
    counts = {
        "tests": str(len(results)),
        "failures": str(sum(r.status == Status.FAILED for r in results)),
        "errors": str(sum(r.status == Status.ERROR for r in results)),
        "skipped": str(sum(r.status == Status.SKIPPED for r in results)),
        "time": f"{done.duration:.3f}",
    }
    root = ET.Element("testsuites", {"name": suite_name, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts, "hostname": socket.gethostname()})
    if started is not None:
        suite.set("timestamp", dt.datetime.fromtimestamp(started.started_at, dt.UTC).isoformat(timespec="seconds"))

    props: list[tuple[str, object]] = [
        ("run_id", started.run_id if started is not None else done.summary.run),
        ("scenario", (started.scenario if started is not None else None) or ""),
        *figures(done).items(),
    ]
    _properties(suite, props)
    for result in results:
        _testcase(suite, result)
    ET.indent(root)
    return ET.ElementTree(root)


class JUnitReporter:
    """Writes the JUnit XML of a run's checks to ``path`` on ``RunFinished``."""

    def __init__(self, path: Path, suite_name: str = "pipeline-check") -> None:
        self.path = Path(path)
        self.suite_name = suite_name
        self._started: RunStarted | None = None

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._started = event
        elif isinstance(event, RunFinished):
            tree = build_tree(event, self._started, self.suite_name)
            text = ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True)
            write_atomically(self.path, text + "\n")

    def close(self) -> None:
        pass
