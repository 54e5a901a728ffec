"""JSON reporter: one machine-readable document per run, written atomically.

Its shape is the JSON Schema bundled beside this module (``report.schema.json``, schema_version 2;
``pipeline-check report-schema`` prints it), which every report the tests produce is validated against.
Times are seconds. **Infinity**: a latency statistic over canaries that never arrived is infinite (the
checks count them that way too); JSON has no infinity, so it is written as the string ``"inf"``, which
``float()`` in Python and ``Number()`` in JavaScript read back as infinity. ``null`` keeps its own
meaning: nothing was measured (too few samples, not applicable). The document is always strict JSON. A
run that ends without a verdict still gets a document, with ``"verdict": "aborted"``, its exit code, the
error, and the checks finished so far.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from pipeline_check.canary.tags import label
from pipeline_check.reporting.document import DocumentReporter
from pipeline_check.verdict.detection_power import CONFIDENCE, upper_bound
from pipeline_check.verdict.events import RunAborted, RunFinished, RunStarted
from pipeline_check.verdict.probe_load import LoadFigures
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.summary import RunSummary

SCHEMA_VERSION = 2
SCHEMA_FILE = "report.schema.json"  # package data beside this module
MAX_DIFFS = 100
TOOL = "pipeline-check"


def report_schema() -> str:
    """The JSON Schema every report follows (text)."""
    return resources.files("pipeline_check.reporting").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def tool_version() -> str:
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


def json_safe(value: Any) -> Any:
    """``value`` with infinities as ``"inf"``/``"-inf"``, NaN as null and tuples as lists."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def iso_utc(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_dict(result: CheckResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "status": result.status.label,
        "observed": result.observed,
        "observed_text": result.observed_text,
        "threshold": result.threshold,
        "samples": result.samples,
        "detail": result.detail,
        "kind": result.kind,
        "rate_bound_pct": result.rate_bound,
    }


def build_document(
    started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]
) -> dict[str, Any]:
    """The report document of a run that finished or aborted."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "tool": {"name": TOOL, "version": tool_version()}}
    finished = end if isinstance(end, RunFinished) else None
    if started is not None:
        doc["run"] = {
            "run_id": started.run_id,
            "scenario": started.scenario,
            "mode": started.mode,
            "window_s": started.window_s,
            "source": started.source,
            "stages": list(started.stages),
            "count": started.count,
            "rate": started.rate,
            "background_rate": started.background_rate,
            "started_at": iso_utc(started.started_at),
            "duration_s": finished.duration if finished is not None else None,
        }
        doc["config"] = dict(started.config)
    if isinstance(end, RunAborted):
        doc |= {
            "verdict": "aborted",
            "exit_code": int(end.exit_code),
            "error": end.reason,
            "checks": [check_dict(r) for r in checks],
        }
        return json_safe(doc)  # type: ignore[no-any-return]

    doc |= {
        "verdict": end.verdict.label,
        "exit_code": int(end.exit_code),
        "error": None,
        "checks": [check_dict(r) for r in end.results],
    }
    s = end.summary
    if s is not None:
        doc |= _canaries(end, s)
    else:
        doc |= {"resolution_s": dict(end.resolution), "notes": list(end.notes)}
    if end.probe_load:
        doc["probe_load"] = {stage: load_dict(figures) for stage, figures in end.probe_load.items()}
    if end.passive is not None:
        doc["passive"] = dataclasses.asdict(end.passive)
    if end.responses is not None:
        doc["api_response"] = dataclasses.asdict(end.responses)
    if end.contract is not None:
        doc["contract"] = dataclasses.asdict(end.contract)
        doc["contract"]["differences"] = [dataclasses.asdict(d) | {"text": d.text} for d in end.contract.differences]
    return json_safe(doc)  # type: ignore[no-any-return]


def _canaries(end: RunFinished, s: RunSummary) -> dict[str, Any]:
    """The figures of an injected run."""
    return {
        "stages": [dataclasses.asdict(stage) for stage in s.stages],
        "e2e": {
            "stage": s.final,
            "reached": s.delivered,
            "injected": s.injected,
            "latency": s.e2e,
            "resolution_s": s.e2e_resolution_s,
        },
        "lost": {"count": s.lost, "rate_bound_pct": _bound(s.lost, s.injected), "stuck": s.stuck},
        "seen": s.seen,
        "duplicates": s.duplicates,
        "retracted": s.retracted,
        "retractions": [
            dataclasses.asdict(r) | {"label": label(r.tag), "text": r.text} for r in s.retractions[:MAX_DIFFS]
        ],
        "incomplete": {"count": s.incomplete_canaries, "per_stage": s.incomplete},
        "corrupted": {
            "count": s.corrupted,
            "compared": s.compared,
            "compared_canaries": s.compared_canaries,
            "diffs": [dataclasses.asdict(d) | {"label": label(d.tag)} for d in s.diffs[:MAX_DIFFS]],
        },
        "out_of_order": s.out_of_order,
        "order_stages": s.order_stages,
        "unexpected": s.unexpected,
        "foreign": s.foreign,
        "throughput": {
            "delivered_per_s": s.throughput.delivered,
            "whole_run_per_s": s.throughput.whole,
            "tail_per_s": s.throughput.tail,
            "injected_per_s": s.throughput.injected_rate,
            "delivery_steps": s.throughput.steps,
            "limited": s.throughput.limited,
        },
        "injection": dataclasses.asdict(s.injection),
        "settle_s": s.settle_s,
        "faults": [dataclasses.asdict(f) for f in s.faults],
        "windows": s.windows,
        "resolution_s": dict(end.resolution),
        "notes": list(end.notes),
    }


def load_dict(figures: LoadFigures) -> dict[str, Any]:
    """One stage's probe load as the report writes it."""
    return {
        "seconds": figures.seconds,
        "requests": dict(figures.calls),
        "bytes": dict(figures.bytes),
        "requests_per_s": {kind: figures.per_s(kind) for kind in figures.calls},
        "bytes_per_s": figures.bytes_per_s(),
        "text": figures.text(),
    }


def _bound(count: int, out_of: int) -> float | None:
    return 100 * upper_bound(count, out_of, CONFIDENCE) if out_of else None


class JsonReporter(DocumentReporter):
    """Writes the run's JSON document to ``path`` when the run finishes or aborts."""

    def __init__(self, path: Path, setting: str = "--json") -> None:
        super().__init__(path, setting)

    def render(self, started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]) -> str:
        return json.dumps(build_document(started, end, checks), indent=2, allow_nan=False) + "\n"
