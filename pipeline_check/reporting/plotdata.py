"""What the HTML report draws, computed from a run's trace book: bounded whatever the run's size.

A chart of 10,000 canaries must stay a few kilobytes, so every series here is thinned or aggregated
with a rule the report states: a CDF through chosen quantiles, an even sample of canaries plus the
slowest one of each time bin (so a spike is never sampled away), counts per time bin. Times are
seconds since the run's first injection; latencies are seconds, ``inf`` for a canary that never
arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

CDF_POINTS = 200  # quantiles a CDF is drawn through (more in the last percent, where SLAs live)
MAX_DOTS = 2_000  # canaries drawn one by one in the latency-over-time chart
MAX_BINS = 60  # time bins of the aggregated charts and their tables
MAX_STEPS = 1_000  # steps of a running count (canaries sent, delivered)


@dataclass(frozen=True, slots=True)
class Cdf:
    """One latency series as ``(latency, share of canaries at or below it)`` points; ``never`` of the
    ``total`` canaries never arrived, so the curve tops out at ``1 - never / total``."""

    name: str
    points: list[tuple[float, float]]
    total: int
    never: int


@dataclass(frozen=True, slots=True)
class Dots:
    """A bounded set of canaries: send time and latency of each drawn one (``inf``: never arrived)."""

    sent: Floats
    latency: Floats
    drawn: int
    of: int


@dataclass(frozen=True, slots=True)
class Bins:
    """Equal time bins over ``[0, span]``: their start times and width in seconds."""

    starts: Floats
    width: float

    @classmethod
    def over(cls, span: float, limit: int = MAX_BINS, least: float = 0.0) -> Bins:
        """Bins of a round width (1, 2, 5 x 10^k seconds), at least ``least`` wide, that cover ``span``
        in at most ``limit``."""
        width = _round_up(max(span / limit, least, 1e-3))
        count = max(1, math.floor(span / width) + 1)
        return cls(np.arange(count, dtype=np.float64) * width, width)

    def index(self, times: Floats) -> Indices:
        """The bin of each time (clamped into range)."""
        raw = np.floor(times / self.width).astype(np.intp)
        clamped: Indices = np.clip(raw, 0, len(self.starts) - 1)
        return clamped

    def count(self, times: Floats) -> npt.NDArray[np.int64]:
        counts: npt.NDArray[np.int64] = np.bincount(self.index(times), minlength=len(self.starts)).astype(np.int64)
        return counts


def _round_up(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above ``value``."""
    decade = 10 ** math.floor(math.log10(value))
    return float(next(step * decade for step in (1, 2, 5, 10) if step * decade >= value * (1 - 1e-9)))


def cdf(name: str, samples: Floats, limit: int = CDF_POINTS) -> Cdf:
    """The empirical CDF of ``samples`` through at most ``limit`` points: every sample when there are
    that few, else evenly spaced ranks with half of them in the last percent (the p99 region)."""
    finite = np.sort(samples[np.isfinite(samples)])
    total = len(samples)
    m = len(finite)
    if m == 0:
        return Cdf(name, [], total, total)
    if m <= limit:
        ranks = np.arange(m)
    else:
        body = np.linspace(0, m - 1, limit // 2)
        tail = np.linspace(math.floor(0.99 * (m - 1)), m - 1, limit - limit // 2)
        ranks = np.unique(np.concatenate([body, tail]).round().astype(np.intp))
    points = [(float(finite[r]), (int(r) + 1) / total) for r in ranks]
    return Cdf(name, points, total, total - m)


def since_start(book: TraceBook) -> Floats:
    """Each injected canary's send time, seconds since the first one was sent."""
    sent = book.first_seen(SOURCE)
    return sent - np.nanmin(sent) if len(sent) else sent


def dots(sent: Floats, latency: Floats, bins: Bins, limit: int = MAX_DOTS) -> Dots:
    """At most ``limit`` canaries: all when there are that few, else an even sample by send time plus
    the slowest canary of each of ``bins`` (at most ``MAX_BINS``), so a latency spike always shows."""
    n = len(sent)
    if n <= limit:
        chosen = np.arange(n)
    else:
        order = np.argsort(sent, kind="stable")
        even = order[np.linspace(0, n - 1, limit - len(bins.starts)).round().astype(np.intp)]
        which = bins.index(sent)
        # the slowest per bin: sort by (bin, latency) and take each bin's last
        ranked = np.lexsort((latency, which))
        last = ranked[np.r_[which[ranked][1:] != which[ranked][:-1], True]]
        chosen = np.unique(np.concatenate([even, last]))
    return Dots(sent[chosen], latency[chosen], len(chosen), n)


@dataclass(frozen=True, slots=True)
class BinStats:
    """Per time bin: canaries sent, those that arrived, their p50/p99/max latency (NaN when none did)."""

    bins: Bins
    sent: npt.NDArray[np.int64]
    arrived: npt.NDArray[np.int64]
    p50: Floats
    p99: Floats
    worst: Floats


def bin_stats(bins: Bins, sent: Floats, latency: Floats) -> BinStats:
    """Latency percentiles of the canaries sent in each bin (nearest rank, arrived ones only)."""
    which = bins.index(sent)
    k = len(bins.starts)
    p50, p99, worst = (np.full(k, np.nan) for _ in range(3))
    arrived = np.zeros(k, np.int64)
    finite = np.isfinite(latency)
    for b in np.unique(which[finite]):
        mine = np.sort(latency[finite & (which == b)])
        arrived[b] = len(mine)
        p50[b] = mine[math.ceil(0.5 * len(mine)) - 1]
        p99[b] = mine[math.ceil(0.99 * len(mine)) - 1]
        worst[b] = mine[-1]
    return BinStats(bins, bins.count(sent), arrived, p50, p99, worst)


@dataclass(frozen=True, slots=True)
class Steps:
    """A running count as ``(time, how many so far)`` points, and how many distinct times it has."""

    points: list[tuple[float, int]]
    distinct: int


def cumulative(times: Floats, limit: int = MAX_STEPS) -> Steps:
    """The running count of ``times`` (NaN ignored) at each distinct time, the last of each run of
    ties; evenly thinned to ``limit`` steps (first and last kept) when there are more."""
    ordered = np.sort(times[~np.isnan(times)])
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True]) if len(ordered) else np.zeros(0, np.intp)
    distinct = len(ends)
    if distinct > limit:
        ends = ends[np.unique(np.linspace(0, distinct - 1, limit).round().astype(np.intp))]
    return Steps([(float(ordered[i]), int(i) + 1) for i in ends], distinct)
