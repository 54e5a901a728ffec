"""Detection power: what a count of canaries can say about a rate.

"0 of 1,000 lost" does not prove a loss rate of zero; it bounds it: below 0.30 % with 95 % confidence.
The bound is the exact one-sided Clopper-Pearson upper limit, the rate ``p`` at which seeing ``k`` or
fewer of ``n`` has probability ``1 - confidence``: ``p = I⁻¹(confidence; k + 1, n - k)``, the inverse of
the regularised incomplete beta function, found by bisection on the continued fraction below (a few
dozen evaluations, each O(1) in ``n``; scipy would do the same at seconds of import time per run).
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95  # every bound pipeline-check reports is taken at this confidence


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound on the rate of an event seen ``k`` times in ``n`` trials (1.0 when n == 0)."""
    if n <= 0 or k >= n:
        return 1.0
    if k == 0:
        return 1.0 - float((1.0 - confidence) ** (1.0 / n))  # closed form: (1 - p)^n = 1 - confidence
    lo, hi = k / n, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _betainc(k + 1, n - k, mid) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _fraction(b, a, 1.0 - x) / b


def _fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result
