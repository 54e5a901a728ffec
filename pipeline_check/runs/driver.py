"""Drives a run: picks the run a :class:`~pipeline_check.runs.plan.Plan` asks for, feeds its events to the
handlers and returns the outcome. The CLI, the pytest plugin and library callers share this one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline_check.config import PipelineConfig
from pipeline_check.core.errors import ExitCode, PipelineCheckError, VerdictFailed
from pipeline_check.runs.plan import Plan
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.events import Event, Handler, RunAborted, RunFinished
from pipeline_check.verdict.results import CheckResult

if TYPE_CHECKING:
    from pipeline_check.faults.runner import Services


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a run for library callers: the final event, its exit code, and the trace book."""

    finished: RunFinished

    @property
    def book(self) -> TraceBook:
        """Every canary's observations (an injected run's; a passive run has none)."""
        if self.finished.book is None:
            raise ValueError("a passive run injects no canary: it has no trace book")
        return self.finished.book

    @property
    def exit_code(self) -> ExitCode:
        return self.finished.exit_code

    def result(self, threshold: str) -> CheckResult:
        """The result of the check with this threshold text."""
        for result in self.finished.results:
            if result.threshold == threshold:
                return result
        raise KeyError(f"no check {threshold!r}; checks: {[r.threshold for r in self.finished.results]}")

    def check(self) -> None:
        """Raise ``VerdictFailed`` (an ``AssertionError``) naming each check that keeps the gate closed,
        with its status and observed vs threshold."""
        failed = self.finished.failed
        if failed:
            lines = [f"{len(failed)} of {len(self.finished.results)} SLA checks did not pass:"]
            lines += [f"  {r.threshold}: {r.status.label}, observed {r.observed_text} ({r.detail})" for r in failed]
            raise VerdictFailed("\n".join(lines))


class Dispatcher:
    """Feeds events to handlers; an aborted run still reaches every handler as ``RunAborted``, and
    every handler is closed once, whatever happened."""

    def __init__(self, handlers: Iterable[Handler]) -> None:
        self.handlers = list(handlers)
        self._ended = False

    def handle(self, event: Event) -> None:
        if isinstance(event, RunFinished | RunAborted):
            self._ended = True
        for handler in self.handlers:
            handler.handle(event)

    def abort(self, exc: BaseException) -> None:
        if not self._ended:
            self.handle(aborted(exc))

    def close(self) -> None:
        for handler in self.handlers:
            handler.close()


def aborted(exc: BaseException) -> RunAborted:
    """The ``RunAborted`` event for an exception that ended a run."""
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return RunAborted("interrupted (Ctrl-C)", ExitCode.INTERRUPTED)
    if isinstance(exc, PipelineCheckError):
        return RunAborted(str(exc), exc.exit_code)
    return RunAborted(f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL_ERROR)


class EventSource(Protocol):
    """A run of any kind: injected (:class:`Run`), with production gates, or passive."""

    def events(self) -> AsyncIterator[Event]: ...


async def drive(make: Callable[[], EventSource], handlers: Iterable[Handler] = ()) -> RunFinished:
    """Feed a run's events to ``handlers`` (an aborted run still reaches them as ``RunAborted``); the
    final event."""
    dispatcher = Dispatcher(handlers)
    finished: RunFinished | None = None
    try:
        async for event in make().events():
            dispatcher.handle(event)
            if isinstance(event, RunFinished):
                finished = event
    except BaseException as exc:
        dispatcher.abort(exc)
        raise
    finally:
        dispatcher.close()
    if finished is None:
        raise RuntimeError("the run ended without a verdict")
    return finished


def make_run(plan: Plan, *, stack: Services | None = None) -> EventSource:
    """The run ``plan`` asks for: passive (nothing injected), injected with the production gates (API
    response times, an API load, the contract), or plainly injected. ``stack`` is the driver a scenario's
    faults act through (default: the one its ``[faults]`` section names). Each kind is imported only when
    a plan asks for it."""
    if plan.mode == "passive":
        from pipeline_check.runs.passive import PassiveRun

        return PassiveRun(plan)
    if plan.mode == "gated":
        from pipeline_check.runs.gated import GatedRun

        return GatedRun(plan, stack=stack)
    from pipeline_check.runs.injected import Run

    return Run(plan, stack=stack)


async def run_plan(plan: Plan, handlers: Iterable[Handler] = (), *, stack: Services | None = None) -> Outcome:
    """Run ``plan``, feeding every event to ``handlers``; returns the outcome."""
    return Outcome(await drive(lambda: make_run(plan, stack=stack), handlers))


async def run_async(
    config: PipelineConfig,
    scenario: str | None = None,
    handlers: Iterable[Handler] = (),
    *,
    passive: bool = False,
    allow_inconclusive: bool = False,
    stack: Services | None = None,
) -> Outcome:
    """Run one scenario of ``config`` (its :class:`Plan`), feeding every event to ``handlers``."""
    plan = Plan.build(config, scenario, passive=passive, allow_inconclusive=allow_inconclusive)
    return await run_plan(plan, handlers, stack=stack)


def run(
    config: PipelineConfig,
    scenario: str | None = None,
    handlers: Iterable[Handler] = (),
    *,
    passive: bool = False,
    allow_inconclusive: bool = False,
    stack: Services | None = None,
) -> Outcome:
    """Synchronous :func:`run_async`."""
    return asyncio.run(
        run_async(config, scenario, handlers, passive=passive, allow_inconclusive=allow_inconclusive, stack=stack)
    )
