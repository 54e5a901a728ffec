"""A ``csv`` file reporter from outside the package: one line per check (threshold, status, observed)."""

from __future__ import annotations

from pathlib import Path

from pipeline_check.reporting.document import DocumentReporter
from pipeline_check.reporting.registry import REPORTERS
from pipeline_check.verdict.events import RunAborted, RunFinished, RunStarted
from pipeline_check.verdict.results import CheckResult


def register() -> None:
    """Offer the reporter as ``--csv PATH`` / ``[report] csv`` in this process: its one registration."""
    REPORTERS.register("csv", f"{__name__}:CsvReporter", help="write the checks as CSV here")


class CsvReporter(DocumentReporter):
    def __init__(self, path: Path, *, setting: str = "--csv") -> None:
        super().__init__(path, setting)

    def render(self, started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]) -> str:
        results = end.results if isinstance(end, RunFinished) else tuple(checks)
        lines = ["threshold,status,observed", *(f"{r.threshold},{r.status.label},{r.observed_text}" for r in results)]
        return "\n".join(lines) + "\n"
