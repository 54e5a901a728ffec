"""Statistics of latency-like samples, exactly as the checks compute them: nearest-rank percentiles (always
an observed value) over samples where ``inf`` is a canary that never arrived (or a request never answered)
and NaN one whose latency was not measured (found by a last sweep, not while the probe watched for it)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def min_samples(aggregate: str) -> int:
    """Samples a statistic needs: pXX needs 1/(1-XX) of them (p99 -> 100); min/max/avg need one."""
    if aggregate.startswith("p"):
        quantile = float("0." + aggregate[1:])
        return math.ceil(1 / (1 - quantile) - 1e-9)
    return 1


def aggregate(samples: Floats, name: str) -> float:
    """The statistic ``name`` of ``samples`` (nearest-rank percentiles: always an observed value;
    ``inf`` samples, canaries that never arrived, count as the latest)."""
    if name == "min":
        return float(samples.min())
    if name == "max":
        return float(samples.max())
    if name == "avg":
        return float(samples.mean())
    # rank = ceil(n * q) in integers: p999 as the float 99.9 would pick the max of 1000 samples, not the 999th
    digits = name[1:]
    rank = max(1, -(-len(samples) * int(digits) // 10 ** len(digits)))
    return float(np.partition(samples, rank - 1)[rank - 1])


def extremes(samples: Floats, name: str) -> tuple[float, float]:
    """The statistic ``name`` with every unmeasured (NaN) sample at the best extreme (0) and at the worst
    (never): equal when every sample was measured."""
    unmeasured = np.isnan(samples)
    if not unmeasured.any():
        value = aggregate(samples, name)
        return value, value
    return aggregate(np.where(unmeasured, 0.0, samples), name), aggregate(np.where(unmeasured, np.inf, samples), name)


def latency_stats(samples: Floats) -> dict[str, float]:
    """p50/p95/p99/max and n of ``samples``, undelivered (``inf``) included exactly as checks count them;
    unmeasured ones (NaN) are counted (``unmeasured``) and left out of the statistics."""
    if not len(samples):
        return {}
    measured = samples[~np.isnan(samples)]
    stats = {name: aggregate(measured, name) for name in ("p50", "p95", "p99", "max")} if len(measured) else {}
    stats["n"] = float(len(samples))
    if len(measured) < len(samples):
        stats["unmeasured"] = float(len(samples) - len(measured))
    return stats
