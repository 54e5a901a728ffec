"""JUnit XML reporter: one test case per SLA check, for CI systems that chart test results.

::

    <testsuites name tests failures errors skipped time>
      <testsuite name tests failures errors skipped time timestamp hostname>
        <properties> run_id, scenario, injected, delivered, lost, duplicates, corrupted, retracted,
                     out_of_order, throughput_per_s, e2e.p50_s .. e2e.p99_s, stage.<name>.p50_s .. p99_s,
                     lost.rate_bound_pct, check[<threshold>] = "<status> observed=<value>";
                     passive runs: passive.basis, <family>.<stage>.p50_s .. p99_s (lag_records: no _s),
                     <stage>.state;
                     where the API was timed: api.response.p50_s .. p99_s, api.load.idle_p95_s,
                     api.load.loaded_p95_s, api.load.degradation; contract.differences
        <testcase classname="pipeline-check.sla" name="<threshold>" time="0">
          <properties> observed, threshold, samples, status, rate_bound_pct
          <failure message="observed X vs threshold Y" type="SLAViolation">detail</failure>      failed
          <error message="inconclusive: ..." type="Inconclusive">detail</error>                 inconclusive
          <skipped message="not applicable: ..."/>                                              not applicable

An inconclusive check is a JUnit *error* (it blocks the gate, and it is not a breach); a check this
configuration cannot observe is *skipped*. A run that aborts (an unreachable endpoint, Ctrl-C) still
writes a file, with one error case carrying the reason, so CI always finds one. Latency percentiles
count undelivered canaries as infinitely late (``inf``), exactly as the checks do.
"""

from __future__ import annotations

import datetime as dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline_check.reporting.document import DocumentReporter
from pipeline_check.verdict.events import RunAborted, RunFinished, RunStarted
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import RunSummary

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
    items: list[tuple[str, object]] = [] if s is None else _canaries(s)
    if done.passive is not None:
        items.append(("passive.basis", done.passive.basis))
        for stage in done.passive.stages:
            items.append((f"{stage.stage}.state", stage.state))
            for family, stats in stage.series.items():
                unit = "" if family == "lag_records" else "_s"
                items += [(f"{family}.{stage.stage}.{p}{unit}", f"{stats[p]:.6f}") for p in PERCENTILES if p in stats]
    if done.responses is not None:
        timed = done.responses
        items += _latencies("api.response", timed.requests)
        if timed.concurrency:
            items.append(("api.load.concurrency", timed.concurrency))
            for phase, stats in (("idle", timed.idle), ("loaded", timed.loaded)):
                if "p95" in stats:
                    items.append((f"api.load.{phase}_p95_s", f"{stats['p95']:.6f}"))
            if timed.degradation is not None:
                items.append(("api.load.degradation", f"{timed.degradation:.3f}"))
    if done.contract is not None:
        items.append(("contract.differences", len(done.contract.differences)))
    for r in done.results:
        items.append((f"check[{r.threshold}]", f"{r.status.label} observed={r.observed_text}"))
        if r.rate_bound is not None:
            items.append((f"check[{r.threshold}].rate_bound_pct", f"{r.rate_bound:.4f}"))
    return dict(items)


def _canaries(s: RunSummary) -> list[tuple[str, object]]:
    """An injected run's figures."""
    items: list[tuple[str, object]] = [
        ("injected", s.injected),
        ("delivered", s.delivered),
        ("lost", s.lost),
        ("duplicates", s.duplicates),
        ("corrupted", s.corrupted),
        ("retracted", s.retracted),
        ("out_of_order", "n/a" if s.out_of_order is None else s.out_of_order),
        ("throughput_per_s", f"{s.throughput.delivered:.3f}"),
        ("injected_per_s", f"{s.throughput.injected_rate:.3f}"),
    ]
    items += _latencies("e2e", s.e2e)
    for stage in s.stages:
        items += _latencies(f"stage.{stage.name}", stage.latency)
    return items


def _testcase(suite: ET.Element, result: CheckResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=CLASSNAME, name=result.threshold, time="0")
    props: list[tuple[str, object]] = [
        ("observed", result.observed_text),
        ("threshold", result.threshold),
        ("samples", result.samples),
        ("status", result.status.label),
    ]
    if result.rate_bound is not None:
        props.append(("rate_bound_pct", f"{result.rate_bound:.4f}"))
    _properties(case, props)
    message = f"observed {result.observed_text} vs threshold {result.threshold}"
    if result.status == Status.FAILED:
        ET.SubElement(case, "failure", message=message, type="SLAViolation").text = result.detail
    elif result.status == Status.INCONCLUSIVE:
        ET.SubElement(case, "error", message=f"inconclusive: {result.detail}", type="Inconclusive").text = result.detail
    elif result.status == Status.NOT_APPLICABLE:
        ET.SubElement(case, "skipped", message=f"not applicable: {result.detail}")


def _suite(name: str, started: RunStarted | None, counts: dict[str, str]) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("testsuites", {"name": name, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": name, **counts, "hostname": socket.gethostname()})
    if started is not None:
        suite.set("timestamp", dt.datetime.fromtimestamp(started.started_at, dt.UTC).isoformat(timespec="seconds"))
    return root, suite


def build_tree(done: RunFinished, started: RunStarted | None, suite_name: str) -> ET.ElementTree[ET.Element]:
    results = done.results
    counts = {
        "tests": str(len(results)),
        "failures": str(sum(r.status == Status.FAILED for r in results)),
        "errors": str(sum(r.status == Status.INCONCLUSIVE for r in results)),
        "skipped": str(sum(r.status == Status.NOT_APPLICABLE for r in results)),
        "time": f"{done.duration:.3f}",
    }
    root, suite = _suite(suite_name, started, counts)
    props: list[tuple[str, object]] = [
        ("run_id", started.run_id if started is not None else (done.summary.run if done.summary else "")),
        ("scenario", (started.scenario if started is not None else None) or ""),
        *figures(done).items(),
    ]
    _properties(suite, props)
    for result in results:
        _testcase(suite, result)
    ET.indent(root)
    return ET.ElementTree(root)


def aborted_tree(aborted: RunAborted, started: RunStarted | None, suite_name: str) -> ET.ElementTree[ET.Element]:
    """One error case carrying why the run ended without a verdict."""
    root, suite = _suite(
        suite_name, started, {"tests": "1", "failures": "0", "errors": "1", "skipped": "0", "time": "0"}
    )
    _properties(suite, [("run_id", started.run_id if started else ""), ("exit_code", int(aborted.exit_code))])
    case = ET.SubElement(suite, "testcase", classname=CLASSNAME, name="run", time="0")
    ET.SubElement(case, "error", message=aborted.reason, type="RunAborted").text = aborted.reason
    ET.indent(root)
    return ET.ElementTree(root)


class JUnitReporter(DocumentReporter):
    """Writes the JUnit XML of a run's checks to ``path`` when the run finishes or aborts."""

    def __init__(self, path: Path, suite_name: str = "pipeline-check", setting: str = "--junit") -> None:
        super().__init__(path, setting)
        self.suite_name = suite_name

    def render(self, started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]) -> str:
        if isinstance(end, RunFinished):
            tree = build_tree(end, started, self.suite_name)
        else:
            tree = aborted_tree(end, started, self.suite_name)
        return ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True) + "\n"
