"""SLA thresholds in a k6-like grammar, and their evaluation against a run's measurements.

::

    threshold := metric OP value
    metric    := "e2e." AGG | "stage." STAGE "." AGG | "throughput" | COUNT
    AGG       := p50 | p90 | p95 | p99 | p999 | min | max | avg
    COUNT     := lost | duplicates | corrupted | out_of_order | delivered
    OP        := < | <= | > | >= | == | !=
    value     := duration (500ms, 30s, 2m) for latencies | rate (100/s) for throughput | integer for counts

Examples: ``e2e.p99 < 30s``, ``stage.iceberg.p95 < 10s``, ``throughput >= 100/s``, ``lost == 0``.
A percentile needs enough samples to mean anything (p99 needs 100): with fewer, the check fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline_check.errors import ConfigError

Kind = Literal["latency", "rate", "count"]


class Status(IntEnum):
    """A check's outcome, ordered by severity: the verdict is the worst of them."""

    PASSED = 0
    SKIPPED = 1
    FAILED = 2
    ERROR = 3


OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
AGGREGATES = ("p50", "p90", "p95", "p99", "p999", "min", "max", "avg")
COUNTS = ("lost", "duplicates", "corrupted", "out_of_order", "delivered")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}

_THRESHOLD = re.compile(r"^\s*(?P<metric>[a-z0-9_.]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$")
_NUMBER = r"(?P<n>\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^{_NUMBER}\s*(?P<unit>ms|s|m)$")
_RATE = re.compile(rf"^{_NUMBER}\s*/\s*s$")
_SHARE = re.compile(rf"^{_NUMBER}\s*%$")
_COUNT = re.compile(r"^(?P<n>\d+)$")
# a delivered rate is a slope through the arrival steps but the last: two points need three steps
MIN_DELIVERY_STEPS = 3


def min_samples(aggregate: str) -> int:
    """Samples a statistic needs: pXX needs 1/(1-XX) of them (p99 -> 100); min/max/avg need one."""
    if aggregate.startswith("p"):
        quantile = float("0." + aggregate[1:])
        return math.ceil(1 / (1 - quantile) - 1e-9)
    return 1


def aggregate(samples: npt.NDArray[np.float64], name: str) -> float:
    """The statistic ``name`` of ``samples`` (nearest-rank percentiles: always an observed value)."""
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


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed threshold expression."""

    text: str
    metric: str
    op: str
    value: float
    kind: Kind
    stage: str | None = None  # for stage.<name>.<agg>
    aggregate: str | None = None  # for latencies
    relative: bool = False  # a rate given as a share of the offered rate ("90%")

    def target(self, offered_rate: float) -> float:
        """The value compared against: absolute, or the share of what was offered."""
        return self.value / 100 * offered_rate if self.relative else self.value

    def holds(self, observed: float, offered_rate: float = 0.0) -> bool:
        return OPS[self.op](observed, self.target(offered_rate))

    def format(self, value: float) -> str:
        return format_value(value, self.kind)


def format_value(value: float, kind: Kind) -> str:
    """Human form of a measured value: ``1.234s``, ``98.5/s``, ``3``; ``inf`` for never."""
    if math.isinf(value):
        return "never (not delivered)"
    if kind == "latency":
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.3f}s"
    if kind == "rate":
        return f"{value:.1f}/s"
    return f"{value:g}"


def parse_threshold(text: str, stages: tuple[str, ...], setting: str = "sla.thresholds") -> Threshold:
    """Parse ``text``; ``stages`` are the names a ``stage.<name>.`` metric may use."""

    def bad(problem: str, fix: str) -> ConfigError:
        return ConfigError(setting, text, problem, fix)

    match = _THRESHOLD.match(text)
    if not match:
        raise bad("is not `metric OP value`", "write e.g. 'e2e.p99 < 30s', 'throughput >= 100/s' or 'lost == 0'")
    metric, op, raw = match["metric"], match["op"], match["value"]
    parts = metric.split(".")
    stage = agg = None
    if metric == "throughput":
        kind: Kind = "rate"
    elif metric in COUNTS:
        kind = "count"
    elif (len(parts) == 2 and parts[0] == "e2e") or (len(parts) == 3 and parts[0] == "stage"):
        kind, agg = "latency", parts[-1]
        if agg not in AGGREGATES:
            raise bad(f"unknown statistic {agg!r}", f"use one of {', '.join(AGGREGATES)}")
        if parts[0] == "stage":
            stage = parts[1]
            if stage not in stages:
                raise bad(f"unknown stage {stage!r}", f"configured stages: {', '.join(stages) or 'none'}")
    else:
        known = ["e2e.<stat>", "stage.<name>.<stat>", "throughput", *COUNTS]
        raise bad(f"unknown metric {metric!r}", f"use one of {', '.join(known)}")

    if kind == "latency":
        m = _DURATION.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a duration", "write it with a unit: 500ms, 30s or 2m")
        value = float(m["n"]) * DURATION_UNITS[m["unit"]]
    elif kind == "rate":
        m = _RATE.match(raw) or _SHARE.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a rate", "write it per second (100/s) or as a share of the offered rate (90%)")
        value = float(m["n"])
        return Threshold(text.strip(), metric, op, value, kind, relative=raw.endswith("%"))
    else:
        m = _COUNT.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a whole number", "counts compare to integers, e.g. lost == 0")
        value = float(m["n"])
    return Threshold(text.strip(), metric, op, value, kind, stage, agg)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one threshold: what was observed against what was required."""

    name: str
    status: Status
    observed: float | None
    threshold: str
    detail: str
    samples: int = 0
    kind: Kind = "count"

    @property
    def observed_text(self) -> str:
        return "n/a" if self.observed is None else format_value(self.observed, self.kind)


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the SLA engine judges: latency samples per stage (``e2e`` too; ``inf`` = not delivered),
    counts, and the delivered throughput with the number of canaries it rests on."""

    latencies: Mapping[str, npt.NDArray[np.float64]]
    counts: Mapping[str, int]
    throughput: float
    throughput_samples: int
    delivery_steps: int
    offered_rate: float
    injected: int
    extra_min_samples: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)


def evaluate(threshold: Threshold, m: Measurements) -> CheckResult:
    """Judge one threshold; too few samples is a failure, never a pass."""
    if threshold.kind == "latency":
        series = "e2e" if threshold.stage is None else threshold.stage
        samples = m.latencies.get(series)
        n = 0 if samples is None else len(samples)
        assert threshold.aggregate is not None
        needed = max(min_samples(threshold.aggregate), m.extra_min_samples)
        if samples is None or n < needed:
            return _too_few(threshold, n, needed, f"{threshold.aggregate} of {series} latency")
        observed = aggregate(samples, threshold.aggregate)
        never = int(np.isinf(samples).sum())
        detail = f"{threshold.aggregate} of {n} {series} latencies" + (f" ({never} never arrived)" if never else "")
    elif threshold.kind == "rate":
        n = m.throughput_samples
        needed = max(2, m.extra_min_samples)
        if n < needed:
            return _too_few(threshold, n, needed, "delivered throughput")
        if m.delivery_steps < MIN_DELIVERY_STEPS:
            return _too_few(
                threshold,
                m.delivery_steps,
                MIN_DELIVERY_STEPS,
                "delivered throughput (distinct arrival times)",
                "inject over several of the pipeline's batch intervals (load.count / load.rate)",
            )
        observed, detail = m.throughput, f"{n} canaries delivered; {m.notes.get('throughput', '')}".rstrip("; ")
        if threshold.relative:
            detail += f"; floor {threshold.value:g}% of offered = {threshold.target(m.offered_rate):.1f}/s"
    else:
        n = m.injected
        if n < max(1, m.extra_min_samples):
            return _too_few(threshold, n, max(1, m.extra_min_samples), f"{threshold.metric} count")
        observed = float(m.counts.get(threshold.metric, 0))
        detail = m.notes.get(threshold.metric, f"out of {n} injected")
    status = Status.PASSED if threshold.holds(observed, m.offered_rate) else Status.FAILED
    return CheckResult(threshold.text, status, observed, threshold.text, detail, n, threshold.kind)


def _too_few(threshold: Threshold, n: int, needed: int, what: str, fix: str = "inject more canaries") -> CheckResult:
    return CheckResult(
        threshold.text,
        Status.FAILED,
        None,
        threshold.text,
        f"too few samples for {what}: {n} < {needed} needed; {fix}",
        n,
        threshold.kind,
    )
