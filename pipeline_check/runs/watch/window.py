"""One evaluation of the sliding window, with the machinery a validation run uses.

The window holds the canaries injected during the last ``window`` seconds before the loss horizon
(``now - lost_after``): every one of them is closed, delivered or lost, so none counts as lost only
because it is still on its way. Their slots are copied into a :class:`WindowBook` (a
:class:`~pipeline_check.trace.book.TraceBook` of just those canaries), then ``summarise``, ``measurements``
and ``evaluate`` judge the config's thresholds exactly as at the end of a run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.ma  # np.unique imports it on first use: a stall of up to seconds in the first evaluation

from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.runs.watch.ring import CanaryRing, Slots, StageSlots
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.evaluation import judge as judge_all
from pipeline_check.verdict.measurements import measurements
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import Status, verdict_of
from pipeline_check.verdict.summary import InjectionStats, RunSummary, summarise
from pipeline_check.verdict.thresholds import Threshold

_COLUMNS = tuple(f.name for f in dataclasses.fields(StageSlots))


class WindowBook(TraceBook):
    """A trace book of the window's canaries (in injection order), filled from their ring slots."""

    @classmethod
    def of(cls, ring: CanaryRing, slots: Slots, run: RunId) -> WindowBook:
        n = len(slots)
        factory = TradeFactory(run, seed=0, count=n, symbols=ring.content.symbols)
        factory.symbol_index = ring.content.symbol_index[slots]  # each canary's symbol as it was sent
        book = cls(run, factory, ring.route, ring.clock)
        book.injected_at[:] = ring.injected_at[slots]
        book.sent_ms[:] = ring.sent_ms[slots]
        book.injected = n
        for stage, held in ring.stages.items():
            column = book._columns[stage]
            for name in _COLUMNS:
                getattr(column, name)[:] = getattr(held, name)[slots]
            book._reached[stage] = int(np.count_nonzero(~np.isnan(column.first)))
        book.shards = dict(ring.shards)
        book.ordered = set(ring.ordered)
        book.unobservable = {stage: dict(what) for stage, what in ring.unobservable.items()}
        position = np.full(ring.capacity, -1, np.int64)
        position[slots] = np.arange(n)
        for slot, diffs in ring.diffs.items():
            if position[slot] >= 0:
                book.diffs[int(position[slot])] = diffs
        book.compared = int(ring.compared[slots].sum())
        return book


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """The last window's judgement; ``verdict`` None while no canary of the window has closed."""

    evaluated_at: float  # wall-clock seconds
    canaries: int
    on_time: int
    sent_ms: tuple[int, int] | None  # send times of its first and last canary
    verdict: Status | None = None
    results: tuple[CheckResult, ...] = ()
    summary: RunSummary | None = None

    @property
    def availability(self) -> float:
        """Delivered on time over injected, NaN with no canary to judge."""
        return self.on_time / self.canaries if self.canaries else math.nan

    @property
    def label(self) -> str:
        return "pending" if self.verdict is None else self.verdict.label


def judge(
    ring: CanaryRing,
    slots: Slots,
    thresholds: Sequence[Threshold],
    *,
    run: RunId,
    rate: float,
    min_samples: int = 0,
    fed: str | None = None,
) -> WindowVerdict:
    """Judge the canaries in ``slots`` (closed ones, in injection order) against ``thresholds``; ``fed``
    names the stage the injector writes itself, whose order says nothing of the pipeline's."""
    now = time.time()
    n = len(slots)
    if not n:
        return WindowVerdict(now, 0, 0, None)
    sent = ring.sent_ms[slots]
    book = WindowBook.of(ring, slots, run)
    summary = summarise(book, _injection(ring, slots, rate), settle_s=0.0, validator_ordered={fed} if fed else ())
    m = measurements(summary, book, min_samples)
    results = tuple(judge_all(thresholds, m, guard_always=True))
    return WindowVerdict(
        evaluated_at=now,
        canaries=n,
        on_time=ring.on_time(slots),
        sent_ms=(int(sent[0]), int(sent[-1])),
        verdict=verdict_of([r.status for r in results]),
        results=results,
        summary=summary,
    )


def _injection(ring: CanaryRing, slots: Slots, rate: float) -> InjectionStats:
    """What injection achieved over the window: pauses and lateness make throughput the validator's limit."""
    at = ring.injected_at[slots]
    span = float(at[-1] - at[0])
    n = len(slots)
    return InjectionStats(
        sent=n,
        background=0,
        offered_rate=rate,
        achieved_rate=(n - 1) / span if n > 1 and span > 0 else 0.0,
        lateness_p99=float(np.percentile(ring.lateness[slots], 99)),
        pauses=int(ring.paused[slots].sum()),
    )
