"""The injected run (the engine): start probes, inject, wait on deadlines, drain and settle, stop,
evaluate; yields events.

The engine knows injectors and probes only through their protocols and the capability registry (imported
only for the types the config names), and handlers only through events. It takes a
:class:`~pipeline_check.runs.plan.Plan` and judges ``plan.thresholds`` (a gated run narrows them to the
plan's checks). The drain and settle logic is :meth:`Run._watch` and :meth:`Run._settle_window`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from pipeline_check.backends.capabilities import INJECTORS, PROBES
from pipeline_check.backends.injector import Injector, InjectorContext, steer
from pipeline_check.backends.polling import Pace
from pipeline_check.backends.probe import Probe, ProbeContext, ProbeLoad, first_placement
from pipeline_check.canary.coverage import Placement, covering_symbols, landing
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config.scenarios import injects_nothing
from pipeline_check.core.clock import Clock
from pipeline_check.runs.pacing import Pacing, inject
from pipeline_check.runs.plan import Plan
from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.evaluation import judge
from pipeline_check.verdict.events import (
    CheckFinished,
    Event,
    Injected,
    NoteBuffer,
    Observed,
    RunFinished,
    RunStarted,
)
from pipeline_check.verdict.measurements import measurements
from pipeline_check.verdict.status import exit_code, verdict_of
from pipeline_check.verdict.summary import BackgroundLoad, InjectionStats, summarise
from pipeline_check.verdict.thresholds import e2e_bound

if TYPE_CHECKING:
    from pipeline_check.backends.trogdor.load import TrogdorLoad
    from pipeline_check.faults.runner import FaultRunner, Services

TICK = 0.02  # how often the engine looks at the trace book: bounds the time to verdict
PROGRESS_EVERY = 0.5
CUT_SHORT_LOOKS = 5.0  # seconds the probes' last looks get when the run was cut short
MIN_SETTLE = 2.0  # seconds; at least twice the longest gap between deliveries at the last stage


class Run:
    """One injected run of ``plan``; iterate ``events()`` once."""

    def __init__(self, plan: Plan, *, clock: Clock | None = None, stack: Services | None = None) -> None:
        if plan.passive:
            raise injects_nothing(plan.scenario)
        self.plan = plan
        self.config = config = plan.config
        self.load = plan.load
        self.thresholds = list(plan.thresholds)
        self.stack = stack  # the driver faults act through (default: the one [faults] names)
        self.clock = clock or Clock()
        self.run_id = RunId.new(self.clock.wall(self.clock.now()))
        self.route = config.route
        messages = config.messages
        self.factory = TradeFactory(
            self.run_id,
            seed=self.load.seed,
            count=self.load.count,
            symbols=messages.canary_symbols or (messages.symbol,),
            background_symbols=messages.background_symbols,
            base_price=messages.base_price,
            precision=messages.precision,
            scale=messages.scale,
        )
        self.notes = NoteBuffer()
        injector_cls = INJECTORS.get(config.source.type)
        self.injector: Injector = injector_cls(config.source.settings, InjectorContext(self.clock, self.notes.note))
        # optional injector hook: the record a subscriber received, when it is not Trade.to_dict (a dialect's)
        self.book = TraceBook(
            self.run_id, self.factory, self.route, self.clock, sent_record=getattr(self.injector, "sent_record", None)
        )
        self.pace = Pace(self._waiting)
        self._sending = False  # the injection is under way
        self.probe_load = {stage: ProbeLoad() for stage in self.route.stages}
        self.probes: list[Probe] = [
            PROBES.get(section.type)(
                section.settings,
                ProbeContext(
                    stage=section.name,
                    upstream=self.route.upstream[section.name],
                    clock=self.clock,
                    run=self.run_id,
                    recorder=self.book,
                    note=self.notes.note,
                    load=self.probe_load[section.name],
                    pace=self.pace,
                ),
            )
            for section in config.stages
        ]
        # background trades from the validator's own process, unless another engine sends them
        self.trogdor = self.load.background.engine == "trogdor" and self.load.background_rate > 0
        self.pacing = Pacing(self.load.count, self.load.rate, 0.0 if self.trogdor else self.load.background_rate)
        self._settle = 0.0
        self.settled_at: float | None = None  # when the watch ended (settle over, or the drain deadline)
        self._coverage_caveat = ""
        self._steered: tuple[str, Placement] | None = None  # the stage canary symbols were chosen for

    async def events(self) -> AsyncIterator[Event]:
        """Run and report; ``EndpointError`` if a stage or the source cannot be reached."""
        began = self.clock.now()
        yield RunStarted(
            run_id=str(self.run_id),
            scenario=self.plan.scenario,
            source=self.config.source.type,
            stages=self.route.stages,
            count=self.load.count,
            rate=self.load.rate,
            background_rate=self.load.background_rate,
            started_at=time.time(),
            config=self.config.redacted(),
        )
        stop = asyncio.Event()
        tasks: list[asyncio.Task[object]] = []
        attempted: list[Probe] = []
        injection: InjectionStats | None = None
        background: TrogdorLoad | None = None
        background_figures: BackgroundLoad | None = None
        completed = False
        faults = self._fault_runner()
        try:
            for probe in self.probes:
                attempted.append(probe)
                await probe.start()
            await self._choose_symbols()
            await self.injector.start()
            self._adopt_source_symbols()
            if self.trogdor:
                background = await self._trogdor_load()
                await background.start()  # sending before the first canary
            for note in self.notes.notes():
                yield note
            stages = self.route.stages
            tasks = [
                asyncio.create_task(p.run(stop), name=f"probe:{s}") for p, s in zip(self.probes, stages, strict=True)
            ]
            if background is not None:
                tasks.append(asyncio.create_task(background.watch(stop), name="background"))
            injecting = asyncio.create_task(
                inject(self.injector, self.book, self.factory, self.pacing, self.clock, self._enough(faults)),
                name="inject",
            )
            self._sending = True
            injecting.add_done_callback(lambda _: setattr(self, "_sending", False))
            tasks.append(injecting)
            faulting = asyncio.create_task(faults.run(), name="faults") if faults is not None else None
            if faulting is not None:
                tasks.append(faulting)
            async for event in self._watch(injecting, tasks, faulting):
                yield event
            injection = injecting.result()
            completed = True
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if background is not None:
                    # on every ending, like the faults; a run cut short (an error, Ctrl-C) waits only briefly
                    # for the final counts: nothing will be judged by them
                    background_figures = await background.stop(cut_short=not completed)
            finally:
                try:
                    if faults is not None:
                        await faults.undo_all()  # on a verdict, an error or Ctrl-C alike: leave the pipeline whole
                finally:
                    try:
                        await self._last_looks(attempted, completed)
                    finally:
                        await self.injector.close()
        for event in self._progress():
            yield event
        for note in self.notes.notes(final=True):
            yield note

        if injection is None:
            raise RuntimeError("injection ended without its figures")
        if background_figures is not None:
            injection = dataclasses.replace(injection, background_load=background_figures)
            if background_figures.short:
                self.notes.note(background_figures.short)
                for note in self.notes.notes(final=True):
                    yield note
        fed = self.injector.feeds_stage
        windows = faults.windows if faults is not None else []
        resolution = {s: p.resolution for s, p in zip(self.route.stages, self.probes, strict=True)}
        summary = summarise(
            self.book,
            injection,
            settle_s=self._settle,
            validator_ordered={fed} if fed else (),
            faults=windows,
            resolution=resolution,
        )
        m = measurements(
            summary,
            self.book,
            self.config.sla.min_samples,
            faults=windows,
            freshness_limit=self._freshness_limit(),
            resolution=resolution,
        )
        if self._steered is not None and not self._coverage_caveat:
            stage, placement = self._steered
            shard_of, _ = self.book.refs(stage)
            self._coverage_caveat = landing(stage, placement, self.factory.symbols, self.factory.symbol_index, shard_of)
        if self._coverage_caveat and m.coverage.out_of:
            caveat = f"{m.coverage.detail}; {self._coverage_caveat}"
            m = dataclasses.replace(m, coverage=dataclasses.replace(m.coverage, detail=caveat))
        results = judge(self.thresholds, m)
        for result in results:
            yield CheckFinished(result)
        verdict = verdict_of([r.status for r in results])
        finished = RunFinished(
            verdict=verdict,
            exit_code=exit_code([r.status for r in results], allow_inconclusive=self.plan.allow_inconclusive),
            results=tuple(results),
            summary=summary,
            resolution=resolution,
            duration=(duration := self.clock.now() - began),
            probe_load={stage: load.figures(duration) for stage, load in self.probe_load.items()},
            notes=tuple(self.notes.all),
            book=self.book,
        )
        yield finished

    async def _choose_symbols(self) -> None:
        """Canaries spread over every partition of the first sharded stage, under the partitioner its probe
        finds (explicit ``canary_symbols`` win); an injector that writes that stage itself is told it, so each
        canary lands where the pipeline's producer would put its key."""
        found = await first_placement(self.route.stages, self.probes, self.book.shards)
        if found is None:
            return
        stage, placement = found
        steered = steer(self.injector, stage, placement)
        if not self.config.messages.canary_symbols:
            self.factory.use_symbols(covering_symbols(self.config.messages.symbol, placement))
            if not steered:
                self._steered = (stage, placement)

    def _enough(self, faults: FaultRunner | None) -> Callable[[], bool] | None:
        """With ``load.after_faults``: injection is done that long after the last fault is over."""
        after = self.load.after_faults
        if after is None or faults is None:
            return None

        def enough() -> bool:
            over = faults.over_at()
            return over is not None and self.clock.now() >= over + after

        return enough

    async def _trogdor_load(self) -> TrogdorLoad:
        """The run's background on Trogdor's agents, bounded to twice the run's expected length (should the
        validator die, the agents stop by themselves)."""
        from pipeline_check.runs.background import trogdor_load

        faults = sum(f.at + f.duration for f in self.plan.faults)
        expected = self.load.count / self.load.rate + self.load.drain_timeout + faults + 60
        return await trogdor_load(
            self.config, self.load, self.factory, str(self.run_id), self.clock, self.notes.note, 2 * expected
        )

    def _fault_runner(self) -> FaultRunner | None:
        """The scenario's faults, wired to what they act on; None without faults."""
        if not self.plan.faults:
            return None
        from pipeline_check.faults.runner import FaultRunner
        from pipeline_check.runs.fault_targets import targets_of

        targets = targets_of(self.config, self.stack, self.plan.faults)
        return FaultRunner(self.plan.faults, targets, self.clock, self.notes.note)

    def _freshness_limit(self) -> float:
        """The e2e latency a canary must meet for the pipeline to count as recovered: the bound of the
        run's own freshness threshold (the first ``e2e.<stat> <``, whole run or after the faults), else 30 s."""
        for t in self.thresholds:
            if t.metric.startswith("e2e.") and t.window in (None, "after") and t.op in ("<", "<="):
                return t.value
        return 30.0

    def _adopt_source_symbols(self) -> None:
        """Canaries ride the symbols the injector chose at start, when it chose (a feed's canaries riding
        the symbols its subscribers follow, known only once they subscribed); optional injector hook."""
        chosen = getattr(self.injector, "canary_symbols", None)
        symbols: tuple[str, ...] | None = chosen() if chosen is not None else None
        if symbols:
            self.factory.use_symbols(symbols)
            self._coverage_caveat = (
                f"canaries rode the symbols the source chose ({', '.join(symbols)}), "
                "not symbols chosen to cover every partition"
            )

    async def _watch(
        self,
        injecting: asyncio.Task[InjectionStats],
        tasks: list[asyncio.Task[object]],
        faulting: asyncio.Task[None] | None = None,
    ) -> AsyncIterator[Event]:
        """Progress until every stage holds every canary and the settle window passed, or the drain
        deadline after injection (and the faults) ended."""
        next_progress = 0.0
        faults_ended = -math.inf  # when the last fault was undone: the batch interval is measured after it
        drain_deadline: float | None = None
        settle_until: float | None = None
        while True:
            await asyncio.sleep(TICK)
            for task in tasks:
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            now = self.clock.now()
            for note in self.notes.notes():
                yield note
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                for event in self._progress():
                    yield event
            if not injecting.done() or (faulting is not None and not faulting.done()):
                continue
            faults_ended = now if faulting is not None and faults_ended < 0 else faults_ended
            if drain_deadline is None:
                drain_deadline = now + self._drain()
            if settle_until is None and all(self.book.complete(s) for s in self.route.stages):
                self._settle = self._settle_window(faults_ended)
                settle_until = now + self._settle
                self.pace.settling = True
            if settle_until is not None and now >= settle_until:
                self.settled_at = now
                return
            if settle_until is None and now >= drain_deadline:
                self.settled_at = now
                missing = {s: self.book.injected - self.book.reached(s) for s in self.route.stages}
                self.notes.note(f"drain timeout ({self._drain():g}s) reached; still missing: {missing}")
                return

    def _drain(self) -> float:
        """How long to wait after the injection (and the faults) for canaries still on their way: the
        ``drain_timeout``, and never less than the end-to-end bound judged: a canary delivered within the
        bound met the SLA and must not be counted lost because the run stopped looking first."""
        bound = e2e_bound(self.thresholds)
        return self.load.drain_timeout if bound is None else max(self.load.drain_timeout, bound)

    async def _last_looks(self, probes: list[Probe], completed: bool) -> None:
        """The probes' last looks; a run cut short (an error, Ctrl-C) judges nothing by them, so it gives them
        ``CUT_SHORT_LOOKS`` seconds at most (a last sweep of an API full of background trades can take
        minutes on a busy machine) and then cancels them: each closes its clients on the way out."""
        if completed:
            await self._finish(probes)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finish(probes), CUT_SHORT_LOOKS)

    async def _finish(self, probes: list[Probe]) -> None:
        """Every probe's last look, a stage after its upstream stage's (a consumer group's last look maps the
        canaries the topic's last read found) and stages at one depth of the route at once, so the time to
        verdict is the route's depth, not the number of stages; the first error is raised once all are done."""
        upstream, stages = self.route.upstream, dict(zip(self.probes, self.route.stages, strict=True))
        depth: dict[str, int] = {}
        for stage in self.route.stages:  # in route order: an upstream stage comes first
            depth[stage] = depth.get(upstream[stage], 0) + 1
        errors: list[BaseException] = []
        for level in sorted({depth[stages[p]] for p in probes}):
            wave = [probe.finish() for probe in probes if depth[stages[probe]] == level]
            errors += [r for r in await asyncio.gather(*wave, return_exceptions=True) if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _waiting(self, stage: str) -> int:
        """Canaries ``stage`` should show next (its probe looks quickly while there are any): those its
        upstream stage holds, or, fed by the source, those sent; while the source sends, the next canary is
        always about to wait there, so a stage fed by it looks without pause (a look only once one was
        seen sent would date canaries late by the gap, a long-poll client's records left unread meanwhile)."""
        book = self.book
        if self.route.upstream[stage] == SOURCE:
            return book.injected - book.reached(stage) or int(self._sending)
        return book.due(stage)

    def _settle_window(self, since: float) -> float:
        """``load.settle``, or the larger of 2 s and twice the longest gap between deliveries at the
        last stage after ``since`` (a pipeline that commits every 5 s may re-append its last batch 5 s
        later; the gap a fault made says nothing of that)."""
        if self.load.settle is not None:
            return self.load.settle
        arrivals = np.unique(self.book.first_seen(self.route.final))
        arrivals = arrivals[~np.isnan(arrivals) & (arrivals > since)]
        gap = float(np.diff(arrivals).max()) if len(arrivals) > 1 else 0.0
        return max(MIN_SETTLE, 2 * gap)

    def _progress(self) -> Iterable[Event]:
        yield Injected(
            sent=self.pacing.sent,
            total=self.pacing.count,
            background=self.pacing.background,
            achieved_rate=self.pacing.achieved_rate(self.clock.now()),
        )
        for stage in self.route.stages:
            yield Observed(stage, self.book.reached(stage), self.book.injected)
