"""How often a probe looks, shared by every probe: quickly while canaries are waiting at its stage (and while
the run settles), slowly otherwise, never above the stage's request rate cap.

A canary *waits* at a stage when the stage should show it next: its upstream stage holds it and the stage
has not shown it yet (for a stage fed by the source, it was sent and the stage has not shown it). The run
says how many wait (:class:`Pace`); the probe's :class:`PollPolicy` turns that into intervals:

- ``poll_interval`` between looks while canaries wait or the run settles (the precision of the stage's times);
- ``idle_interval`` between looks otherwise (late copies and retractions are still found, just later); an
  idle wait ends as soon as canaries wait, at the fast cadence;
- ``max_request_rate``: requests per second the probe never exceeds (a production API's rate limit); every
  request to the system waits for its turn (:meth:`PollPolicy.request`).

Unset settings take the run mode's defaults (``Pace``): a validation looks every 0.1 s while canaries wait
and every second otherwise; the watch looks as often as it sends canaries (at most once a second at its
default rate) and caps every stage at that rate, so a continuous canary costs about one request per
canary per stage.

The resolution a probe reports is the median gap between its looks *while canaries waited*, counted from
when they began to wait: the interval it really used where its times are measured, the cap's included.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from pipeline_check.core.durations import Duration
from pipeline_check.core.plugins import PluginSettings

WAKE = 0.02  # seconds: how soon an idle wait notices canaries waiting (an in-memory count, no request)
GAPS = 10_000  # look gaps kept for the resolution


def _always(stage: str) -> int:
    return 1


@dataclass(slots=True)
class Pace:
    """What a run tells its probes about how hard to look: canaries waiting per stage, whether it settles,
    and the run mode's poll defaults. One per run (per generation in a watch), shared by its probes."""

    waiting: Callable[[str], int] = _always  # canaries the stage should show next
    settling: bool = False  # the settle window: every probe looks quickly for late copies and retractions
    poll_interval: float = 0.1
    idle_interval: float = 1.0
    max_request_rate: float | None = None

    @classmethod
    def for_watch(cls, waiting: Callable[[str], int], rate: float) -> Pace:
        """The watch's: look as often as canaries are sent (at most every second, at least every 0.1 s),
        and never ask a stage more often than that."""
        interval = min(1.0, max(0.1, 1 / rate))
        return cls(waiting, poll_interval=interval, idle_interval=10 * interval, max_request_rate=1 / interval)


class PollSettings(PluginSettings):
    """A probe's poll settings (each stage's section; unset: the run mode's defaults)."""

    poll_interval: Duration | None = None
    idle_interval: Duration | None = None
    max_request_rate: Annotated[float, Field(gt=0)] | None = None  # requests per second


@dataclass(slots=True)
class _Looks:
    """Gaps between looks that could see a canary first, each counted from when canaries began to wait."""

    last: float | None = None
    gaps: list[float] = field(default_factory=list)

    def look(self, at: float, waiting_since: float | None) -> None:
        if self.last is not None:
            self.gap(self.last, at, waiting_since)
        self.last = at

    def gap(self, start: float, end: float, waiting_since: float | None) -> None:
        if waiting_since is not None and len(self.gaps) < GAPS:
            self.gaps.append(max(0.0, end - max(start, waiting_since)))


class PollPolicy:
    """One probe's pace (see the module docstring). ``stage`` and ``pace`` come from its context."""

    def __init__(self, settings: PollSettings, stage: str, pace: Pace, clock: Callable[[], float] = time.monotonic):
        self.stage = stage
        self.pace = pace
        self.fast_interval = settings.poll_interval if settings.poll_interval is not None else pace.poll_interval
        idle = settings.idle_interval if settings.idle_interval is not None else pace.idle_interval
        self.idle_interval = max(idle, self.fast_interval)
        rate = settings.max_request_rate if settings.max_request_rate is not None else pace.max_request_rate
        self.max_request_rate = rate
        self._gap = 1 / rate if rate else 0.0
        self._next_request = 0.0
        self._clock = clock
        self._looks = _Looks()
        self._waiting_since: float | None = None
        self.throttled_s = 0.0  # seconds requests waited for the cap

    @classmethod
    def of(cls, settings: Any, ctx: Any) -> PollPolicy:
        """The policy of a probe with these settings (a :class:`PollSettings`) and context."""
        return cls(settings, ctx.stage, ctx.pace, ctx.clock.now)

    @property
    def fast(self) -> bool:
        """Canaries wait at the stage, or the run settles: look quickly."""
        fast = self.pace.settling or self.pace.waiting(self.stage) > 0
        if fast and self._waiting_since is None:
            self._waiting_since = self._clock()
        elif not fast:
            self._waiting_since = None
        return fast

    def interval(self) -> float:
        return self.fast_interval if self.fast else self.idle_interval

    def looked(self, at: float | None = None) -> None:
        """A look at the stage happened (``at``: when, default now); its gap counts toward the resolution
        when canaries were waiting."""
        self._looks.look(self._clock() if at is None else at, self._waiting_since if self.fast else None)

    def blind(self, start: float, end: float) -> None:
        """The probe could not see the stage from ``start`` to ``end`` (a long poll: from one answer until the
        next request went out); counts toward the resolution when canaries were waiting."""
        self._looks.gap(start, end, self._waiting_since if self.fast else None)

    async def wait(self, stop: asyncio.Event) -> None:
        """Until the next look is due: ``poll_interval`` after the last look while canaries wait (or the run
        settles), else ``idle_interval``; an idle wait ends early once canaries wait. Returns at once when
        ``stop`` is set."""
        began = self._clock()
        while not stop.is_set():
            last = self._looks.last
            due = (began if last is None else last) + self.interval()
            remaining = due - self._clock()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(remaining, WAKE))

    async def request(self) -> None:
        """Wait for this request's turn under ``max_request_rate`` (at once without a cap). Concurrent
        requests queue: each takes the next free slot."""
        if not self._gap:
            return
        now = self._clock()
        slot = max(now, self._next_request)
        self._next_request = slot + self._gap
        if slot > now:
            self.throttled_s += slot - now
            await asyncio.sleep(slot - now)

    @property
    def resolution(self) -> float:
        """Median seconds between looks while canaries waited (0 before two such looks)."""
        return statistics.median(self._looks.gaps) if self._looks.gaps else 0.0
