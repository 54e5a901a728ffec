"""Delivered throughput: the rate the last stage keeps up with, from canary send and arrival times.

A pipeline that writes in batches delivers in steps. The latest-sent canary of each step is the one
that caught its batch just in time, so those points trace how far behind the feed the pipeline runs:
their arrival time against send time has slope 1 for a pipeline that keeps up, whatever the batch
phase, and injected/capacity for one that falls behind. The slope is Theil-Sen's (the median of the
pairwise slopes), so one stalled batch in a short run does not read as a slow pipeline while a
sustained backlog moves every pair. The last step is left out: its latest canary is the last one fed,
which waits for a batch however fast the pipeline is. The rate is the injection rate over that slope,
never above it. The same fit over the last 30 % of the run shows a slowdown that sets in late, which
the median over the whole run would outvote; it is made only when that part spans ten batch intervals
and ten steps, or one batch's phase and a probe's polling jitter would read as a slowdown. Even then the
tail rests on few points, so it comes with the upper end of its 95 % interval (Sen's, from the ranks of
the pairwise slopes): a tail that only jitter put low does not fail a rate on its own.

The batch interval is the gap between steps that a random instant of the run falls in (the
length-weighted median gap): one stall in a long run does not make it long, and a step the last
stage happens to see in two polls does not make it short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
TAIL = 0.3  # the last part of the injection span judged on its own
# A slope from fewer points, or over a span of fewer batch intervals, is at the mercy of one batch's phase
# and of latency jitter (as for the whole run: sla.MIN_DELIVERY_STEPS); a short run's tail is not judged.
MIN_TAIL_POINTS = 10
MIN_TAIL_GAPS = 10
Z95 = 1.959964  # two-sided 95 % normal quantile, for the slope's interval
MAX_POINTS = (
    400  # Theil-Sen is quadratic in points: a pipeline that delivers one canary at a time has a step per canary
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Delivered canaries/s over the whole run and over its last part (None: too few points), the
    injection rate they are measured against, the distinct arrival times (steps) it rests on, the
    pipeline's batch interval and the longest gap between two steps."""

    rate: float
    tail: float | None
    injected_rate: float
    steps: int
    longest_gap: float
    span: float = 0.0  # seconds between the first and the last delivered canary's sending
    interval: float = 0.0  # the batch interval: the length-weighted median gap between steps
    tail_upper: float | None = None  # the tail rate's upper 95 % bound


@dataclass(frozen=True, slots=True)
class ThroughputFigures:
    """Delivered throughput as the estimator found it (:func:`delivered_rate`), for the report and the checks."""

    delivered: float  # THE figure: canaries/s over the whole run, or the tail's upper bound where lower
    tail: float | None  # over the last part of the run (a late slowdown), when it has enough points
    injected_rate: float  # what the validator achieved over every canary it sent: the basis
    steps: int  # distinct arrival times at the last stage
    detail: str
    limited: str | None = None  # why the validator, not the pipeline, set the pace
    span: float = 0.0  # seconds over which the delivered canaries were sent
    interval: float = 0.0  # the pipeline's batch interval, seconds (throughput.batch_interval)
    tail_upper: float | None = None  # the upper 95 % bound of ``tail``
    whole: float = 0.0  # canaries/s over the whole run (``delivered`` unless the tail's bound is lower)


def delivered_rate(sent: Floats, arrivals: Floats) -> Estimate:
    """The estimate for canaries sent at ``sent`` and first seen at the last stage at ``arrivals``
    (delivered ones only; monotonic seconds)."""
    delivered = len(arrivals)
    span = float(sent.max() - sent.min()) if delivered > 1 else 0.0
    if delivered < 2 or span <= 0:
        return Estimate(0.0, None, 0.0, 0, 0.0)
    injected_rate = (delivered - 1) / span
    order = np.argsort(arrivals, kind="stable")
    arrived = arrivals[order]
    starts = np.flatnonzero(np.r_[True, arrived[1:] != arrived[:-1]])
    steps = arrived[starts]
    gaps = np.diff(steps)
    gap = float(gaps.max()) if len(gaps) else 0.0
    interval = batch_interval(gaps)
    latest_sent = np.maximum.reduceat(sent[order], starts)[:-1]
    points_y = steps[:-1]
    # canaries injected in one batch share a send time: steps whose latest ones tie are one point
    if len(np.unique(latest_sent)) < 2:
        return Estimate(injected_rate, None, injected_rate, len(steps), gap, span, interval)
    rate = _rate(injected_rate, theil_sen(latest_sent, points_y))
    late = latest_sent >= sent.min() + (1 - TAIL) * span
    tail = tail_upper = None
    if len(np.unique(latest_sent[late])) >= MIN_TAIL_POINTS and TAIL * span >= MIN_TAIL_GAPS * interval:
        slopes = pairwise_slopes(latest_sent[late], points_y[late])
        tail = _rate(injected_rate, float(np.median(slopes)))
        tail_upper = _rate(injected_rate, slope_bounds(slopes)[0])
    return Estimate(rate, tail, injected_rate, len(steps), gap, span, interval, tail_upper)


def judged_rate(whole: float, tail_upper: float | None) -> float:
    """The one delivered-rate figure (reports and the check alike): the whole run's rate, or the upper 95 %
    bound of its last part's where even that is lower (a slowdown that set in late, beyond jitter)."""
    return whole if tail_upper is None else min(whole, tail_upper)


def batch_interval(gaps: Floats) -> float:
    """The gap a random instant between the first and the last step falls in: the median of the gaps
    weighted by their length (0 without gaps)."""
    if not len(gaps):
        return 0.0
    ordered = np.sort(gaps)
    covered = np.cumsum(ordered)
    return float(ordered[np.searchsorted(covered, covered[-1] / 2)])


def _rate(injected_rate: float, slope: float) -> float:
    return injected_rate if slope <= 1 else injected_rate / slope


def theil_sen(x: Floats, y: Floats, max_points: int = MAX_POINTS) -> float:
    """Median slope over all pairs with distinct ``x`` (two distinct values at least), evenly thinned to
    ``max_points`` first, which bounds the pair count."""
    return float(np.median(pairwise_slopes(x, y, max_points)))


def pairwise_slopes(x: Floats, y: Floats, max_points: int = MAX_POINTS) -> Floats:
    """The slopes of all pairs with distinct ``x``, sorted; evenly thinned to ``max_points`` first."""
    if len(x) > max_points:
        keep = np.linspace(0, len(x) - 1, max_points).astype(np.intp)
        x, y = x[keep], y[keep]
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    distinct = dx != 0
    return np.sort((y[j] - y[i])[distinct] / dx[distinct])


def slope_bounds(slopes: Floats) -> tuple[float, float]:
    """Sen's 95 % interval of the Theil-Sen slope from the sorted pairwise ``slopes`` (N of them, from n
    points): the slopes ranked (N -/+ z * sd of Kendall's S) / 2, S's sd being sqrt(n(n-1)(2n+5)/18)."""
    count = len(slopes)
    n = (1 + math.sqrt(1 + 8 * count)) / 2  # N = n(n-1)/2 pairs
    half = Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18) / 2
    low = min(max(math.floor(count / 2 - half), 0), count - 1)
    high = min(max(math.ceil(count / 2 + half), 0), count - 1)
    return float(slopes[low]), float(slopes[high])
