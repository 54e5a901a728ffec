"""JSON reporter: one machine-readable document per run, written atomically.

Shape (``schema_version`` 1)::

    {"schema_version": 1, "tool": {"name", "version"},
     "run": {"run_id", "scenario", "source", "stages", "count", "rate", "background_rate",
             "started_at" (ISO-8601 UTC), "duration_s"},
     "config": {...settings, secrets masked...},
     "verdict": "passed" | "skipped" | "failed" | "error" | "aborted",
     "exit_code": 0 | 1 | null,
     "checks": [{"name", "status", "observed", "observed_text", "threshold", "samples", "detail", "kind"}],
     "stages": [{"name", "reached", "duplicated", "extra_copies", "latency", "since_injection",
                 "source_latency", "upstream"}],
     "e2e": {"reached", "injected", "latency"},
     "lost": {"count", "stuck": {stage: [tag labels]}},
     "duplicates", "corrupted": {"count", "diffs": [first 100]}, "out_of_order", "unexpected",
     "throughput": {"delivered_per_s", "offered_per_s", "delivery_steps"},
     "injection": {"sent", "background", "offered_rate", "achieved_rate", "lateness_p99", "pauses"},
     "resolution_s": {stage: seconds}}

Times are seconds. **Infinity**: a latency statistic over canaries that never arrived is infinite;
JSON has no infinity, so it is written as the string ``"inf"`` (``"-inf"`` for its negative), which
``float()`` in Python and ``Number()``/``parseFloat`` in JavaScript read back as infinity. ``null``
keeps its own meaning: nothing was measured (too few samples) or the value is NaN. The document is
always strict JSON (``allow_nan=False``).

A run that ends without ``RunFinished`` (aborted) still gets a document on ``close``, with
``"verdict": "aborted"``, ``"exit_code": null`` and the checks finished so far.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline_check.errors import ExitCode
from pipeline_check.events import CheckFinished, Event, RunFinished, RunStarted
from pipeline_check.sla import CheckResult, Status
from pipeline_check.tags import label

SCHEMA_VERSION = 1
MAX_DIFFS = 100
TOOL = "pipeline-check"


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


def exit_code(verdict: Status) -> int:
    return int(ExitCode.OK if verdict < Status.FAILED else ExitCode.VERDICT_FAILED)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_dict(result: CheckResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "status": result.status.name.lower(),
        "observed": result.observed,
        "observed_text": result.observed_text,
        "threshold": result.threshold,
        "samples": result.samples,
        "detail": result.detail,
        "kind": result.kind,
    }


def build_document(
    started: RunStarted | None, finished: RunFinished | None, checks: list[CheckResult]
) -> dict[str, Any]:
    """The report document; ``finished`` None means the run was aborted."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "tool": {"name": TOOL, "version": tool_version()}}
    if started is not None:
        doc["run"] = {
            "run_id": started.run_id,
            "scenario": started.scenario,
            "source": started.source,
            "stages": list(started.stages),
            "count": started.count,
            "rate": started.rate,
            "background_rate": started.background_rate,
            "started_at": iso_utc(started.started_at),
            "duration_s": finished.duration if finished is not None else None,
        }
        doc["config"] = dict(started.config)
    if finished is None:
        doc |= {"verdict": "aborted", "exit_code": None, "checks": [check_dict(r) for r in checks]}
        return json_safe(doc)  # type: ignore[no-any-return]

    s = finished.summary
    e2e = s.stages[-1].since_injection if s.stages else {}
    doc |= {
        "verdict": finished.verdict.name.lower(),
        "exit_code": exit_code(finished.verdict),
        "checks": [check_dict(r) for r in finished.results],
        "stages": [dataclasses.asdict(stage) for stage in s.stages],
        "e2e": {"reached": s.delivered, "injected": s.injected, "latency": e2e},
        "lost": {"count": s.lost, "stuck": s.stuck},
        "duplicates": s.duplicates,
        "corrupted": {
            "count": s.corrupted,
            "diffs": [dataclasses.asdict(d) | {"label": label(d.tag)} for d in s.diffs[:MAX_DIFFS]],
        },
        "out_of_order": s.out_of_order,
        "unexpected": s.unexpected,
        "throughput": {
            "delivered_per_s": s.throughput,
            "offered_per_s": s.offered_rate,
            "delivery_steps": s.delivery_steps,
        },
        "injection": dataclasses.asdict(finished.injection),
        "resolution_s": dict(finished.resolution),
    }
    return json_safe(doc)  # type: ignore[no-any-return]


class JsonReporter:
    """Writes the run's JSON document to ``path`` on ``RunFinished`` (or on ``close`` if aborted)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._started: RunStarted | None = None
        self._checks: list[CheckResult] = []
        self._written = False

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._started = event
        elif isinstance(event, CheckFinished):
            self._checks.append(event.result)
        elif isinstance(event, RunFinished):
            self._write(build_document(self._started, event, self._checks))

    def close(self) -> None:
        if not self._written and self._started is not None:
            self._write(build_document(self._started, None, self._checks))

    def _write(self, doc: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        self._written = True
