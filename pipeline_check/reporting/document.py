"""The one shape of a report written to a file: the path checked writable before the run, the run's start
and its checks gathered, one document written atomically when the run finishes or aborts."""

from __future__ import annotations

from pathlib import Path

from pipeline_check.core.atomic_files import ensure_writable, write_atomically
from pipeline_check.verdict.events import CheckFinished, Event, RunAborted, RunFinished, RunStarted
from pipeline_check.verdict.results import CheckResult


class DocumentReporter:
    """A handler writing one file per run; subclasses say what the document is (``render``)."""

    def __init__(self, path: Path, setting: str) -> None:
        self.path = Path(path)
        ensure_writable(self.path, setting)  # a bad path stops the run before it starts, not after it
        self._started: RunStarted | None = None
        self._checks: list[CheckResult] = []

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._started = event
        elif isinstance(event, CheckFinished):
            self._checks.append(event.result)
        elif isinstance(event, RunFinished | RunAborted):
            write_atomically(self.path, self.render(self._started, event, self._checks))

    def close(self) -> None:
        pass

    def render(self, started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]) -> str:
        """The document of a run that finished, or aborted (``checks``: those finished before)."""
        raise NotImplementedError
