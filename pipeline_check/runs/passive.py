"""Passive runs: inject nothing, sample each stage for ``passive.window``, judge freshness, lag, API
response times and the contract.

Every ``passive.interval`` each stage's sampler looks once (all at the same time). A stage is
*active* when new data arrived there during the window, *stale* when none did while data arrived
upstream of it (or waited for it: a consumer group's lag), *idle* when nothing moved up to it. Series
of active and stale stages are judged; an idle stage's are inconclusive, so an idle pipeline is never
passed. Ages rest on the pipeline's own timestamps against this machine's clock; a timestamp in the
future is flagged as clock skew (its age reads 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.backends.load import Load, QueryMix, response_figures
from pipeline_check.backends.sampler import Reading, Sampler, SamplerContext
from pipeline_check.config.sections import StageSection
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError
from pipeline_check.runs.contract import check_contract
from pipeline_check.runs.plan import Plan
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.contract_diff import contract_result
from pipeline_check.verdict.evaluation import evaluate_series
from pipeline_check.verdict.events import CheckFinished, Event, Note, NoteBuffer, RunFinished, RunStarted
from pipeline_check.verdict.figures import ContractFigures, PassiveFigures, StageSeries
from pipeline_check.verdict.measurements import Series
from pipeline_check.verdict.response_times import ResponseTimes
from pipeline_check.verdict.results import CheckResult, format_value
from pipeline_check.verdict.statistics import latency_stats
from pipeline_check.verdict.status import exit_code, verdict_of
from pipeline_check.verdict.thresholds import PASSIVE_FAMILIES

PROGRESS_EVERY = 5.0  # seconds between progress notes
TICK = 0.05  # how often the run passes notes on while sampling


@dataclass(slots=True)
class StageLooks:
    """What the samples of one stage said."""

    values: dict[str, list[float]] = field(default_factory=dict)
    positions: list[Any] = field(default_factory=list)
    backlog: bool = False
    failed: int = 0
    ahead_s: float = 0.0
    detail: str = ""

    def add(self, reading: Reading) -> None:
        for family, value in reading.values.items():
            self.values.setdefault(family, []).append(value)
        self.positions.append(reading.position)
        self.backlog |= reading.backlog
        self.ahead_s = max(self.ahead_s, reading.ahead_s)
        self.detail = reading.detail

    @property
    def moved(self) -> bool:
        """New data arrived between the first look and a later one."""
        return any(p != self.positions[0] for p in self.positions)


class PassiveRun:
    """One passive run of ``plan``; iterate ``events()`` once. A plan judging ``contract`` alone checks the
    contract, sampling nothing (:meth:`Plan.contract_check <pipeline_check.runs.plan.Plan.contract_check>`)."""

    def __init__(self, plan: Plan, *, clock: Clock | None = None) -> None:
        self.plan = plan
        self.config = config = plan.config
        self.thresholds = list(plan.thresholds)
        self.clock = clock or Clock()
        self.notes = NoteBuffer()
        self.responses = ResponseTimes()  # every API request of the samplers and the contract check
        self.window = config.passive.window
        self.interval = config.passive.sample_interval
        self.symbols = config.query_symbols
        sampling = any(t.series is not None for t in self.thresholds)
        self.samplers: list[tuple[StageSection, Sampler]] = []
        for section in config.stages if sampling else ():
            sampler = STAGE_TYPES.sampler(section.type)
            if sampler is None:
                self.notes.note(f"stage {section.name}: no passive sampler for type {section.type}; not sampled")
                continue
            ctx = SamplerContext(
                stage=section.name,
                clock=self.clock,
                note=self.notes.note,
                responses=self.responses,
                symbols=self.symbols,
                event_time=config.passive.event_time.get(section.name),
                window=self.window,
            )
            self.samplers.append((section, sampler(section.settings, ctx)))
        self.load = self._api_load(plan.load.api_concurrency) if self.samplers else None
        self.finished: RunFinished | None = None

    def _api_load(self, concurrency: int) -> Load | None:
        """The load on the first stage whose type offers one (an API), asking about the sampled window."""
        found = next(((s, c) for s in self.config.stages if (c := STAGE_TYPES.load(s.type)) is not None), None)
        if not concurrency or found is None:
            return None
        section, load = found
        clock, window_ms = self.clock, int(self.window * 1000)
        mix = QueryMix(
            self.symbols,
            since_ms=lambda: clock.wall_ms(clock.now()) - window_ms,
            now_ms=lambda: clock.wall_ms(clock.now()),
        )
        return load(section.settings, section.name, concurrency, mix, seed=self.config.load.seed)

    async def events(self) -> AsyncIterator[Event]:
        began = self.clock.now()
        yield RunStarted(
            run_id=f"passive-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}",
            scenario=self.plan.scenario,
            source="none (passive)",
            stages=tuple(section.name for section, _ in self.samplers),
            count=0,
            rate=0.0,
            background_rate=0.0,
            started_at=time.time(),
            config=self.config.redacted(),
            mode="passive",
            window_s=self.window if self.samplers else 0.0,
        )
        looks = {section.name: StageLooks() for section, _ in self.samplers}
        async with contextlib.AsyncExitStack() as stack:
            if self.load is not None:
                stack.push_async_callback(self.load.stop)  # its client is closed whatever happens
            for _, sampler in self.samplers:
                stack.push_async_callback(sampler.close)  # closed even when its start fails halfway
                await sampler.start()
            if self.load is not None:
                await self.load.measure_idle()
                self.load.start()
                self.notes.note(f"API load: {self.load.concurrency} concurrent queries while sampling")
            for note in self.notes.notes():
                yield note
            if self.samplers:
                async for note in self._sample(looks):
                    yield note
        contract = await self._contract()
        series = self._series(looks)
        results: list[CheckResult] = []
        for threshold in self.thresholds:
            if threshold.kind == "contract" and contract is not None:
                result = contract_result(contract)
            else:
                result = evaluate_series(threshold, series.get(threshold.series or ""))
            results.append(result)
            yield CheckFinished(result)
        for note in self.notes.notes(final=True):
            yield note
        verdict = verdict_of([r.status for r in results])
        freshness = {name: latency_stats(s.samples) for name, s in series.items() if name.startswith("freshness.")}
        self.finished = RunFinished(
            verdict=verdict,
            exit_code=exit_code([r.status for r in results], allow_inconclusive=self.plan.allow_inconclusive),
            results=tuple(results),
            summary=None,
            resolution={section.name: self.interval for section, _ in self.samplers},
            duration=self.clock.now() - began,
            notes=tuple(self.notes.all),
            passive=self._figures(looks) if self.samplers else None,
            responses=response_figures(self.responses, self.load, freshness) if self.samplers else None,
            contract=contract,
        )
        yield self.finished

    async def _sample(self, looks: dict[str, StageLooks]) -> AsyncIterator[Note]:
        """Each sampler looks every interval on its own task (a slow stage does not slow the others)
        until the window is over; notes as they come, and progress."""
        clock = self.clock
        began = clock.now()
        end = began + self.window
        tasks = [
            asyncio.create_task(
                self._look(section.name, sampler, looks[section.name], end), name=f"sample:{section.name}"
            )
            for section, sampler in self.samplers
        ]
        try:
            next_progress = began + PROGRESS_EVERY
            while not all(task.done() for task in tasks):
                await asyncio.wait(tasks, timeout=TICK)
                for task in tasks:
                    if task.done() and (error := task.exception()) is not None:
                        raise error
                for note in self.notes.notes():
                    yield note
                if (now := clock.now()) >= next_progress and now < end:
                    next_progress = now + PROGRESS_EVERY
                    yield Note(f"sampled {now - began:.0f}s of {self.window:g}s: {_latest(looks)}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _look(self, stage: str, sampler: Sampler, look: StageLooks, end: float) -> None:
        """One stage's looks, each ``interval`` after the last began, until ``end``."""
        clock = self.clock
        next_look = clock.now()
        while True:
            try:
                reading = await sampler.sample()
            except ConfigError:
                raise  # a setting the stage contradicts: no later look helps
            except Exception as exc:  # a look that failed (a restarting broker, an API error): noted, retried
                look.failed += 1
                self.notes.note(f"{stage}: a look failed ({type(exc).__name__}: {exc})")
            else:
                look.add(reading)
                if reading.ahead_s > 0 and look.ahead_s == reading.ahead_s:
                    self.notes.note(_skew(stage, reading.ahead_s))
            now = clock.now()
            if now >= end:
                return
            next_look = max(next_look + self.interval, now)
            await asyncio.sleep(min(next_look, end) - now)

    async def _contract(self) -> ContractFigures | None:
        if not any(t.kind == "contract" for t in self.thresholds):
            return None
        return await check_contract(self.config, self.responses, self.clock.wall_ms(self.clock.now()))

    def _states(self, looks: dict[str, StageLooks]) -> dict[str, str]:
        route = self.config.route

        def upstream_moved(stage: str) -> bool:
            up = route.upstream[stage]
            while up != SOURCE:
                if up in looks and looks[up].moved:
                    return True
                up = route.upstream[up]
            return False

        return {
            stage: "active" if look.moved else ("stale" if look.backlog or upstream_moved(stage) else "idle")
            for stage, look in looks.items()
        }

    def _series(self, looks: dict[str, StageLooks]) -> dict[str, Series]:
        """Each sampled series, with why it cannot be judged where it cannot."""
        states = self._states(looks)
        series: dict[str, Series] = {}
        for section, sampler in self.samplers:
            stage, look = section.name, looks[section.name]
            for family in sampler.provides:
                values = np.asarray(look.values.get(family, []), dtype=np.float64)
                series[f"{family}.{stage}"] = _judged(stage, family, values, look, states[stage], self.window)
        series["api.response"] = Series(
            self.responses.samples,
            detail=f"response times of the samplers' API requests ({self.responses.failed} failed)",
            more="sample for longer (passive.window) or more often (passive.interval)",
        )
        return series

    def _figures(self, looks: dict[str, StageLooks]) -> PassiveFigures:
        states = self._states(looks)
        stages = tuple(
            StageSeries(
                stage=section.name,
                type=section.type,
                state=states[section.name],
                series={
                    f: latency_stats(np.asarray(v, dtype=np.float64)) for f, v in looks[section.name].values.items()
                },
                last={f: v[-1] for f, v in looks[section.name].values.items() if v},
                samples=len(looks[section.name].positions),
                failed=looks[section.name].failed,
                ahead_s=looks[section.name].ahead_s,
                detail=looks[section.name].detail,
            )
            for section, _ in self.samplers
        )
        skew = tuple(_skew(s.stage, s.ahead_s) for s in stages if s.ahead_s > 0)
        return PassiveFigures(self.window, self.interval, stages, skew)


def _judged(stage: str, family: str, values: Any, look: StageLooks, state: str, window: float) -> Series:
    name = f"{family}.{stage}"
    if state == "idle":
        return Series(
            values,
            inconclusive=f"no new data at {stage} during the {window:g}s window, nor upstream of it: the pipeline "
            f"looks idle (is anything feeding it?), and an idle pipeline's {family} cannot be judged",
        )
    if not len(values):
        why = f"every look failed ({look.failed})" if look.failed else (look.detail or "no value")
        return Series(values, inconclusive=f"{name} has no sample: {why}")
    kind = PASSIVE_FAMILIES[family]
    last = format_value(float(values[-1]), kind)
    if state == "stale":
        where = "data waits for it" if look.backlog else "upstream of it had new data"
        how = f"no new data at {stage} during the {window:g}s window while {where}; {family} at the end {last}"
    else:
        how = f"new data at {stage} during the window; {family} at the end {last}"
    return Series(values, detail=f"{how} ({look.detail})" if look.detail else how)


def _skew(stage: str, ahead: float) -> str:
    return (
        f"clock skew at {stage}: a timestamp lies {ahead:.3f}s in the future of this machine's clock "
        "(ages there read 0; the pipeline's clocks and this one disagree)"
    )


def _latest(looks: dict[str, StageLooks]) -> str:
    parts = []
    for stage, look in looks.items():
        for family, values in look.values.items():
            if values:
                parts.append(f"{family}.{stage} {format_value(values[-1], PASSIVE_FAMILIES[family])}")
    return ", ".join(parts) or "no value yet"
