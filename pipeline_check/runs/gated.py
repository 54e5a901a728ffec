"""The gated run: an injected run that also judges the production gates: the API probe's response times
(``api.response``), the API under ``load.api_concurrency`` concurrent queries, and the contract.

It is the engine's run with those thresholds held back from the engine and judged when it finishes;
the load's idle response times are measured after ``RunStarted`` and before the probes start, and the
load runs until the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.backends.load import Load, QueryMix, response_figures
from pipeline_check.backends.probe import TimedProbe
from pipeline_check.runs.contract import check_contract
from pipeline_check.runs.injected import Run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.contract_diff import contract_result
from pipeline_check.verdict.evaluation import evaluate_series
from pipeline_check.verdict.events import CheckFinished, Event, RunFinished, RunStarted
from pipeline_check.verdict.measurements import Series
from pipeline_check.verdict.response_times import ResponseTimes
from pipeline_check.verdict.status import exit_code, verdict_of
from pipeline_check.verdict.thresholds import API_RESPONSE

LOOKBACK_MS = 10_000  # load windows may start this long before the run


class GatedRun(Run):
    """One injected run of ``plan``, production gates included."""

    def __init__(self, plan: Plan, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        self.gated = list(plan.gates)
        self.thresholds = list(plan.checks)  # what the engine judges
        self.api = next((p for p in self.probes if isinstance(p, TimedProbe)), None)
        self.api_load = self._api_load()

    def _api_load(self) -> Load | None:
        """The load on the first stage whose type offers one (an API), with ``load.api_concurrency`` workers."""
        found = next(((s, c) for s in self.config.stages if (c := STAGE_TYPES.load(s.type)) is not None), None)
        if not self.load.api_concurrency or found is None:
            return None
        section, load = found
        messages, clock = self.config.messages, self.clock
        since = clock.wall_ms(clock.now()) - LOOKBACK_MS
        mix = QueryMix(
            (*(messages.canary_symbols or (messages.symbol,)), *messages.background_symbols),
            since_ms=lambda: since,
            now_ms=lambda: clock.wall_ms(clock.now()),
        )
        tags = (self.run_id.lo, self.run_id.hi)
        return load(section.settings, section.name, self.load.api_concurrency, mix, seed=self.load.seed, tags=tags)

    async def events(self) -> AsyncIterator[Event]:
        load, stopped = self.api_load, False
        try:
            async for event in super().events():
                if isinstance(event, RunStarted) and load is not None:
                    yield event
                    await load.measure_idle()
                    load.start()
                    self.notes.note(f"API load: {load.concurrency} concurrent queries for the run")
                elif isinstance(event, RunFinished):
                    if load is not None:
                        stopped = True
                        await load.stop()  # before the contract check and the verdict
                    async for gated in self._judge(event):
                        yield gated
                else:
                    yield event
        finally:
            if load is not None and not stopped:  # an aborted run: its client is closed all the same
                await load.stop()

    async def _judge(self, finished: RunFinished) -> AsyncIterator[Event]:
        """The held-back checks, then the run's end with every result."""
        contract = None
        if any(t.kind == "contract" for t in self.gated):
            contract = await check_contract(self.config, ResponseTimes(), self.clock.wall_ms(self.clock.now()))
        responses = self.api.responses if self.api is not None else ResponseTimes()
        series = Series(
            responses.samples,
            detail=f"response times of the API probe's requests ({responses.failed} failed)",
            more="inject for longer (load.count / load.rate): the probe asks every poll_interval",
        )
        results = list(finished.results)
        for threshold in self.gated:
            result = contract_result(contract) if contract is not None and threshold.kind == "contract" else None
            if result is None:
                result = evaluate_series(threshold, series if threshold.series == API_RESPONSE else None)
            results.append(result)
            yield CheckFinished(result)
        verdict = verdict_of([r.status for r in results])
        e2e = {"e2e": finished.summary.e2e} if finished.summary is not None else {}
        done = dataclasses.replace(
            finished,
            verdict=verdict,
            exit_code=exit_code([r.status for r in results], allow_inconclusive=self.plan.allow_inconclusive),
            results=tuple(results),
            responses=response_figures(responses, self.api_load, e2e) if self.api is not None else None,
            contract=contract,
        )
        yield done
