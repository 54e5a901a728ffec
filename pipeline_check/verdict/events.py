"""What a run reports as it goes: frozen events, consumed by handlers (console, JSON, JUnit, pytest).

The engine yields them in this order: ``RunStarted``, then ``Injected`` / ``Observed`` / ``Note`` as
progress, one ``CheckFinished`` per threshold, and ``RunFinished`` last; a run that cannot finish
(an unreachable endpoint, Ctrl-C, a bug) ends with ``RunAborted`` instead, so every report still
gets written and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline_check.core.errors import ExitCode
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.figures import ContractFigures, PassiveFigures, ResponseFigures
from pipeline_check.verdict.probe_load import LoadFigures
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import RunSummary


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    scenario: str | None
    source: str  # the injector type
    stages: tuple[str, ...]
    count: int
    rate: float
    background_rate: float
    started_at: float  # wall-clock seconds
    config: Mapping[str, Any] = field(default_factory=dict)  # settings with secrets masked
    mode: str = "active"  # passive: injects nothing (count and rates are 0), samples for window_s
    window_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Injected:
    """Injection progress: canaries sent so far."""

    sent: int
    total: int
    background: int
    achieved_rate: float


@dataclass(frozen=True, slots=True)
class Observed:
    """Probe progress: canaries first seen at ``stage`` so far."""

    stage: str
    reached: int
    injected: int


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth telling while a run goes on (a subscriber connected, an API's paging)."""

    message: str


@dataclass(frozen=True, slots=True)
class CheckFinished:
    result: CheckResult


@dataclass(frozen=True, slots=True)
class RunFinished:
    verdict: Status
    exit_code: ExitCode  # the verdict through the gate rule (status.exit_code)
    results: tuple[CheckResult, ...]
    summary: RunSummary | None  # None for a passive run: nothing was injected
    resolution: Mapping[str, float]  # per stage: the probe's median poll interval, seconds
    duration: float  # seconds from RunStarted to verdict
    notes: tuple[str, ...] = ()
    # every canary's times, for reporters that draw them (read only: the run is over)
    book: TraceBook | None = field(default=None, compare=False, repr=False)
    passive: PassiveFigures | None = None
    responses: ResponseFigures | None = None  # API response times, where an API was timed
    contract: ContractFigures | None = None
    # per stage: what its probe asked of the system (requests and bytes), over ``duration``
    probe_load: Mapping[str, LoadFigures] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        """Checks that keep the gate closed: breached, or inconclusive unless that was allowed."""
        worst = Status.INCONCLUSIVE if self.exit_code != ExitCode.OK else Status.FAILED
        return tuple(r for r in self.results if r.status >= worst)


@dataclass(frozen=True, slots=True)
class RunAborted:
    """The run ended without a verdict; ``reason`` is the one-line error."""

    reason: str
    exit_code: ExitCode


Event = RunStarted | Injected | Observed | Note | CheckFinished | RunFinished | RunAborted


class Handler(Protocol):
    """Consumes events; ``close`` runs once after ``RunFinished`` or ``RunAborted``."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


class NoteBuffer:
    """Notes gathered between two looks of the engine; a repeat of the last note is counted, not queued
    again (an API that stays down is one note, not one per poll). The count is told once, when another
    note comes or the run ends (``notes(final=True)``), however many looks the repeats spanned."""

    def __init__(self) -> None:
        self._notes: list[Note] = []
        self._last_note = ""
        self._repeats = 0
        self.all: list[str] = []

    def note(self, message: str) -> None:
        if message == self._last_note:
            self._repeats += 1
            return
        self._flush_repeats()
        self._last_note = message
        self._add(message)

    def notes(self, *, final: bool = False) -> list[Note]:
        """The notes since the last call; ``final``: with the count of the last note's repeats so far."""
        if final:
            self._flush_repeats()
        notes, self._notes = self._notes, []
        return notes

    def _add(self, message: str) -> None:
        self._notes.append(Note(message))
        self.all.append(message)

    def _flush_repeats(self) -> None:
        if self._repeats:
            times = "once more" if self._repeats == 1 else f"{self._repeats} more times"
            self._add(f"(the note above repeated {times})")
            self._repeats = 0
