"""Runs a scenario: start probes, inject, wait on deadlines, stop, evaluate; yields events throughout.

The engine knows injectors and probes only through their protocols and registries, and handlers only
through events, so the CLI, the pytest plugin and library callers share one code path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from pipeline_check.clock import Clock
from pipeline_check.config import PipelineConfig
from pipeline_check.errors import ExitCode, VerdictFailed
from pipeline_check.events import (
    CheckFinished,
    Event,
    Handler,
    Injected,
    InjectionStats,
    Note,
    Observed,
    RunFinished,
    RunStarted,
)
from pipeline_check.injectors.base import INJECTORS, Injector
from pipeline_check.messages import TradeFactory
from pipeline_check.pacing import Pacing, inject
from pipeline_check.probes.base import PROBES, STAGE_PROBES, Probe
from pipeline_check.sla import CheckResult, Status, evaluate
from pipeline_check.tags import RunId
from pipeline_check.trace import TraceBook

TICK = 0.02  # how often the engine looks at the trace book: bounds the time to verdict
PROGRESS_EVERY = 0.5


def _load_builtins() -> None:
    """Import the bundled injectors and probes so they register themselves."""
    import pipeline_check.injectors.kafka
    import pipeline_check.injectors.websocket
    import pipeline_check.probes.api
    import pipeline_check.probes.consumer_group
    import pipeline_check.probes.iceberg
    import pipeline_check.probes.kafka_topic  # noqa: F401


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a run for library callers: the final event and the exit code it maps to."""

    finished: RunFinished
    book: TraceBook

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.finished.verdict == Status.PASSED else ExitCode.VERDICT_FAILED

    def result(self, threshold: str) -> CheckResult:
        """The result of the check with this threshold text."""
        for result in self.finished.results:
            if result.threshold == threshold:
                return result
        raise KeyError(f"no check {threshold!r}; checks: {[r.threshold for r in self.finished.results]}")

    def check(self) -> None:
        """Raise ``VerdictFailed`` (an ``AssertionError``) naming each failed check, observed vs threshold."""
        failed = self.finished.failed
        if failed:
            lines = [f"{len(failed)} of {len(self.finished.results)} SLA checks failed:"]
            lines += [f"  {r.threshold}: observed {r.observed_text} ({r.detail})" for r in failed]
            raise VerdictFailed("\n".join(lines))


class Run:
    """One validation run of ``config`` under ``scenario``; iterate ``events()`` once."""

    def __init__(self, config: PipelineConfig, scenario: str | None = None, *, clock: Clock | None = None) -> None:
        _load_builtins()
        self.config = config
        self.scenario = scenario
        self.load = config.load_for(scenario)
        self.thresholds = config.thresholds_for(scenario)
        self.clock = clock or Clock()
        self.run_id = RunId.new(self.clock.wall(self.clock.now()))
        self.stages = config.stages.enabled()
        self.factory = TradeFactory(
            self.run_id,
            seed=self.load.seed,
            count=self.load.count,
            symbol=config.messages.symbol,
            background_symbols=config.messages.background_symbols,
            base_price=config.messages.base_price,
        )
        self.book = TraceBook(self.run_id, self.factory, self.stages, self.clock)
        self.injector: Injector = INJECTORS.get(config.source.type)(config, self.clock)
        self.probes: list[Probe] = [PROBES.get(STAGE_PROBES[s])(config, self.clock, self.book) for s in self.stages]
        self.pacing = Pacing(self.load.count, self.load.rate, self.load.background_rate)
        self.outcome: Outcome | None = None

    async def events(self) -> AsyncIterator[Event]:
        """Run and report; ``EndpointError`` if a stage or the source cannot be reached."""
        began = self.clock.now()
        yield RunStarted(
            run_id=str(self.run_id),
            scenario=self.scenario,
            source=self.config.source.type,
            stages=self.stages,
            count=self.load.count,
            rate=self.load.rate,
            background_rate=self.load.background_rate,
            started_at=time.time(),
            config=self.config.redacted(),
        )
        stop = asyncio.Event()
        started: list[Probe] = []
        tasks: list[asyncio.Task[object]] = []
        injection: InjectionStats | None = None
        try:
            for probe in self.probes:
                await probe.start()
                started.append(probe)
            await self.injector.start()
            for note in self.injector.notes():
                yield note
            tasks = [asyncio.create_task(p.run(stop), name=f"probe:{p.stage}") for p in started]
            injecting = asyncio.create_task(
                inject(self.injector, self.book, self.factory, self.pacing, self.clock), name="inject"
            )
            tasks.append(injecting)
            async for event in self._watch(injecting, tasks):
                yield event
            injection = injecting.result()
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for probe in started:
                await probe.finish()
            await self.injector.close()
        for event in self._progress():
            yield event
        assert injection is not None  # the injection task finished, or an exception left above

        summary = self.book.summary(self.load.rate)
        measurements = self.book.measurements(summary, self.config.sla.min_samples)
        results: list[CheckResult] = []
        for threshold in self.thresholds:
            result = evaluate(threshold, measurements)
            results.append(result)
            yield CheckFinished(result)
        verdict = max((r.status for r in results), default=Status.PASSED)
        finished = RunFinished(
            verdict=verdict,
            results=tuple(results),
            summary=summary,
            injection=injection,
            resolution={p.stage: p.resolution for p in started},
            duration=self.clock.now() - began,
        )
        self.outcome = Outcome(finished, self.book)
        yield finished

    async def _watch(
        self, injecting: asyncio.Task[InjectionStats], tasks: list[asyncio.Task[object]]
    ) -> AsyncIterator[Event]:
        """Progress until every stage holds every canary, or the drain deadline after injection."""
        next_progress = 0.0
        drain_deadline: float | None = None
        settle_until: float | None = None
        while True:
            await asyncio.sleep(TICK)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            now = self.clock.now()
            sources: list[Injector | Probe] = [self.injector, *self.probes]
            for source in sources:
                for note in source.notes():
                    yield note
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                for event in self._progress():
                    yield event
            if not injecting.done():
                continue
            if drain_deadline is None:
                drain_deadline = now + self.load.drain_timeout
            if settle_until is None and all(self.book.complete(s) for s in self.stages):
                settle_until = now + self.load.settle
            if settle_until is not None and now >= settle_until:
                return
            if now >= drain_deadline:
                missing = {s: self.book.injected - self.book.reached(s) for s in self.stages}
                yield Note(f"drain timeout ({self.load.drain_timeout:g}s) reached; still missing: {missing}")
                return

    def _progress(self) -> Iterable[Event]:
        yield Injected(
            sent=self.pacing.sent,
            total=self.pacing.count,
            background=self.pacing.background,
            achieved_rate=self.pacing.achieved_rate(self.clock.now()),
        )
        for stage in self.stages:
            yield Observed(stage, self.book.reached(stage), self.book.injected)


async def run_async(config: PipelineConfig, scenario: str | None = None, handlers: Iterable[Handler] = ()) -> Outcome:
    """Run one scenario, feeding every event to ``handlers``; returns the outcome."""
    handlers = list(handlers)
    run = Run(config, scenario)
    try:
        async for event in run.events():
            for handler in handlers:
                handler.handle(event)
    finally:
        for handler in handlers:
            handler.close()
    assert run.outcome is not None
    return run.outcome


def run(config: PipelineConfig, scenario: str | None = None, handlers: Iterable[Handler] = ()) -> Outcome:
    """Synchronous :func:`run_async`."""
    return asyncio.run(run_async(config, scenario, handlers))
