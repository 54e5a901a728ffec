"""Paced injection: canaries at ``rate`` and untagged background trades at ``background_rate``, each
sent at its scheduled time on the run's monotonic clock (a late loop catches up, it never drifts)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline_check.backends.injector import Injector
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.summary import BackgroundLoad, InjectionStats

# Behind schedule by more than this (a subscriber reconnecting, a stalled broker), the schedule moves on
# instead of sending the backlog in one burst: a source pauses, it does not flood.
MAX_BACKLOG = 1.0


@dataclass(slots=True)
class Pacing:
    """Progress of one paced injection, readable while it runs."""

    count: int
    rate: float
    background_rate: float
    sent: int = 0
    background: int = 0
    pauses: int = 0
    started: float = math.nan
    ended: float = math.nan
    lateness: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))

    def achieved_rate(self, now: float) -> float:
        end = now if math.isnan(self.ended) else self.ended
        span = end - self.started
        return (self.sent - 1) / span if self.sent > 1 and span > 0 else 0.0

    def stats(self) -> InjectionStats:
        late = self.lateness[: self.sent]
        span = self.ended - self.started
        background = None
        if self.background_rate > 0:
            rate = self.background / span if span > 0 else None
            background = BackgroundLoad("local", self.background_rate, rate, self.background, span)
        return InjectionStats(
            sent=self.sent,
            background=self.background,
            offered_rate=self.rate,
            achieved_rate=self.achieved_rate(self.ended),
            lateness_p99=float(np.percentile(late, 99)) if len(late) else 0.0,
            pauses=self.pauses,
            background_load=background,
        )


async def inject(
    injector: Injector,
    book: TraceBook,
    factory: TradeFactory,
    pacing: Pacing,
    clock: Clock,
    done: Callable[[], bool] | None = None,
) -> InjectionStats:
    """Send ``pacing.count`` canaries (recorded in ``book``) interleaved with background trades; fewer when
    ``done`` says so first (it is asked before each canary)."""
    pacing.lateness = np.zeros(pacing.count, np.float32)
    canary_gap = 1 / pacing.rate
    background_gap = 1 / pacing.background_rate if pacing.background_rate > 0 else math.inf
    pacing.started = base = clock.now()
    base_seq, next_background = 0, base + background_gap / 2
    since_yield = 0
    while pacing.sent < pacing.count:
        now = clock.now()
        next_canary = base + (pacing.sent - base_seq) * canary_gap
        if now - next_canary > MAX_BACKLOG:
            pacing.pauses += 1
            base, base_seq, next_canary, next_background = now, pacing.sent, now, now + background_gap / 2
        due = min(next_canary, next_background)
        if due > now:
            await asyncio.sleep(due - now)
            since_yield = 0
        elif since_yield >= 64:  # behind schedule: still let the probes and progress run
            await asyncio.sleep(0)
            since_yield = 0
        since_yield += 1
        if next_canary <= next_background:
            if done is not None and done():
                break
            at = clock.now()
            pacing.lateness[pacing.sent] = at - next_canary
            await injector.send(book.inject(pacing.sent, at))
            pacing.sent += 1
        else:
            await injector.send(factory.background(clock.wall_ms(clock.now())))
            pacing.background += 1
            next_background += background_gap
    await injector.flush()
    pacing.ended = clock.now()
    return pacing.stats()
