"""What a run reports as it goes: frozen events, consumed by handlers (console, JSON, JUnit, pytest).

The engine yields them in this order: ``RunStarted``, then ``Injected`` / ``Observed`` / ``Note`` as
progress, one ``CheckFinished`` per threshold, and ``RunFinished`` last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline_check.sla import CheckResult, Status
from pipeline_check.trace import RunSummary


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    scenario: str | None
    source: str  # websocket | kafka
    stages: tuple[str, ...]
    count: int
    rate: float
    background_rate: float
    started_at: float  # wall-clock seconds
    config: Mapping[str, Any] = field(default_factory=dict)  # settings with secrets masked


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
    """Something worth telling while a run goes on (a subscriber connected, a source paused)."""

    message: str


class NoteBuffer:
    """Notes an injector or probe gathers between two looks of the engine; a repeat of the last note
    is counted, not queued again (an API that stays down is one note, not one per poll)."""

    def __init__(self) -> None:
        self._notes: list[Note] = []
        self._last_note = ""
        self._repeats = 0

    def note(self, message: str) -> None:
        if message == self._last_note:
            self._repeats += 1
            return
        self._flush_repeats()
        self._last_note = message
        self._notes.append(Note(message))

    def notes(self) -> list[Note]:
        """The notes since the last call."""
        self._flush_repeats()
        notes, self._notes = self._notes, []
        return notes

    def _flush_repeats(self) -> None:
        if self._repeats:
            self._notes.append(Note(f"(the note above repeated {self._repeats} more times)"))
            self._repeats = 0


@dataclass(frozen=True, slots=True)
class CheckFinished:
    result: CheckResult


@dataclass(frozen=True, slots=True)
class InjectionStats:
    """What the injector achieved against what was asked of it."""

    sent: int
    background: int
    offered_rate: float
    achieved_rate: float
    lateness_p99: float  # seconds a send started after its scheduled time
    pauses: int  # times the source waited for a subscriber or skipped ahead


@dataclass(frozen=True, slots=True)
class RunFinished:
    verdict: Status
    results: tuple[CheckResult, ...]
    summary: RunSummary
    injection: InjectionStats
    resolution: Mapping[str, float]  # per stage: the probe's median poll interval, seconds
    duration: float  # seconds from RunStarted to verdict

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status >= Status.FAILED)


Event = RunStarted | Injected | Observed | Note | CheckFinished | RunFinished


class Handler(Protocol):
    """Consumes events; ``close`` runs once after ``RunFinished`` or when the run aborts."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...
