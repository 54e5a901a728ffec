"""SLA thresholds in a k6-like grammar, and their evaluation against a run's measurements.

::

    threshold := metric OP value
    metric    := "e2e." AGG [WINDOW] | "stage." STAGE "." AGG [WINDOW] | "throughput" | "recovery" | COUNT | SHARE
               | FAMILY "." STAGE "." AGG | "api.response." AGG
    WINDOW    := "[before]" | "[during]" | "[after]"   canaries sent before, during or after the faults
    FAMILY    := freshness | lag | lag_records | snapshot_age      (sampled by passive runs)
    AGG       := p50 | p90 | p95 | p99 | p999 | min | max | avg
    COUNT     := lost | duplicates | corrupted | retracted | incomplete | out_of_order | delivered
    SHARE     := loss_rate | duplicate_rate | corrupt_rate | coverage
    OP        := < | <= | > | >= | == | !=
    value     := duration (500ms, 30s, 2m) | rate (100/s, or 90% of the achieved injection rate)
               | integer for counts and lag_records | percentage for shares
    contract  := "contract"                                            (the stages' declared contract holds)

Examples: ``e2e.p99 < 30s``, ``stage.iceberg.p95 < 10s``, ``throughput >= 100/s``, ``lost == 0``,
``loss_rate < 0.1%``, ``coverage == 100%``, ``e2e.p99[during] < 60s``, ``recovery < 30s``,
``freshness.iceberg.max < 60s``, ``lag.consumer.p99 < 30s``, ``api.response.p95 < 500ms``, ``contract``.

Sampled series (freshness, lag, API response times) are judged like latencies, on their samples
(:class:`Series`): a series that saw nothing to judge (an idle pipeline) is inconclusive, never passed.

Each check ends ``passed``, ``failed``, ``inconclusive`` (too few samples; nothing compared; the
validator's own injection fell behind) or ``not applicable`` (this configuration cannot observe it). A
percentile needs enough samples to mean anything (p99 needs 100). A rate threshold passes only when the
one-sided 95 % upper bound on the rate is below it, so it demands enough canaries.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline_check.core.durations import HINT as DURATION_HINT
from pipeline_check.core.durations import parse_duration
from pipeline_check.core.errors import ConfigError
from pipeline_check.verdict.detection_power import upper_bound
from pipeline_check.verdict.status import Status

Kind = Literal["latency", "rate", "count", "share", "contract"]
Floats = npt.NDArray[np.float64]

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
AGGREGATES = ("p50", "p90", "p95", "p99", "p999", "min", "max", "avg")
COUNTS = ("lost", "duplicates", "corrupted", "retracted", "incomplete", "out_of_order", "delivered")
# a share of canaries with a property -> the count it is the rate of
RATES = {"loss_rate": "lost", "duplicate_rate": "duplicates", "corrupt_rate": "corrupted"}
SHARES = (*RATES, "coverage")
# series sampled from the pipeline's own timestamps by passive runs: family -> what a value is
PASSIVE_FAMILIES: dict[str, Kind] = {
    "freshness": "latency",  # now minus the newest record's time at the stage
    "lag": "latency",  # now minus the oldest record the consumer group has not committed
    "lag_records": "count",  # records the consumer group has not committed
    "snapshot_age": "latency",  # now minus the table's latest commit
}
API_RESPONSE = "api.response"  # the API's response times, in every mode
CONTRACT = "contract"
DEFAULT_THRESHOLDS = (
    "e2e.p99 < 30s",
    "lost == 0",
    "duplicates == 0",
    "corrupted == 0",
    "retracted == 0",
    "incomplete == 0",
    "coverage == 100%",
    "throughput >= 90%",
)
CONFIDENCE = 0.95

_THRESHOLD = re.compile(
    r"^\s*(?P<metric>[a-z0-9_.]+)(?:\[(?P<window>[a-z]+)\])?\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$"
)
WINDOWS = ("before", "during", "after")
MIN_RECOVERY_CANARIES = 10  # canaries sent after a fault before recovery can be told
_NUMBER = r"(?P<n>\d+(?:\.\d+)?)"
_RATE = re.compile(rf"^{_NUMBER}\s*/\s*s$")
_SHARE = re.compile(rf"^{_NUMBER}\s*%$")
_COUNT = re.compile(r"^(?P<n>\d+)$")
# A delivered rate is a slope through the arrival steps but the last: fewer steps than this leave too
# few points for a slope that one batch's phase cannot swing.
MIN_DELIVERY_STEPS = 5


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


def latency_stats(samples: Floats) -> dict[str, float]:
    """p50/p95/p99/max and n of ``samples``, undelivered (``inf``) included exactly as checks count them."""
    if not len(samples):
        return {}
    stats = {name: aggregate(samples, name) for name in ("p50", "p95", "p99", "max")}
    return stats | {"n": float(len(samples))}


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
    relative: bool = False  # a rate given as a share of the achieved injection rate ("90%")
    window: str | None = None  # latencies of canaries sent before, during or after the faults
    series: str | None = None  # the sampled series judged ("freshness.iceberg", "api.response")

    @property
    def passive_only(self) -> bool:
        """Judged on series only a passive run samples."""
        return self.series is not None and self.series.split(".")[0] in PASSIVE_FAMILIES

    @property
    def needs_canaries(self) -> bool:
        """Judged on injected canaries (what a passive run has none of)."""
        return self.series is None and self.kind != "contract"

    def holds(self, observed: float, reference_rate: float = 0.0) -> bool:
        target = self.value / 100 * reference_rate if self.relative else self.value
        return OPS[self.op](observed, target)

    @property
    def key(self) -> tuple[str, str, str, float, bool]:
        """What makes two thresholds the same check, however they are spelt."""
        return self.metric, self.window or "", self.op, self.value, self.relative


def format_value(value: float, kind: Kind) -> str:
    """Human form of a measured value: ``1.234s``, ``98.5/s``, ``3``, ``0.30%``; ``never`` for ``inf``."""
    if math.isinf(value):
        return "never (not delivered)"
    if kind == "latency":
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.3f}s"
    if kind == "rate":
        return f"{value:.1f}/s"
    if kind == "share":
        return f"{value:.2f}%"
    if kind == "contract":
        return "1 difference" if value == 1 else f"{value:g} differences"
    return f"{value:g}"


def parse_thresholds(texts: Iterable[tuple[str, str]], stages: tuple[str, ...]) -> list[Threshold]:
    """Parse ``(setting, text)`` pairs; the same threshold twice is an error (it would be judged twice)."""
    parsed: dict[tuple[str, str, str, float, bool], tuple[str, Threshold]] = {}
    for setting, text in texts:
        threshold = parse_threshold(text, stages, setting)
        if threshold.key in parsed:
            first_setting, first = parsed[threshold.key]
            raise ConfigError(setting, text, f"repeats {first.text!r} ({first_setting})", "give each threshold once")
        parsed[threshold.key] = (setting, threshold)
    return [threshold for _, threshold in parsed.values()]


def parse_threshold(text: str, stages: tuple[str, ...], setting: str = "sla.thresholds") -> Threshold:
    """Parse ``text``; ``stages`` are the names a ``stage.<name>.`` metric may use."""

    def bad(problem: str, fix: str) -> ConfigError:
        return ConfigError(setting, text, problem, fix)

    if text.strip() == CONTRACT:
        return Threshold(CONTRACT, CONTRACT, "==", 0.0, "contract")
    match = _THRESHOLD.match(text)
    if not match:
        raise bad("is not `metric OP value`", "write e.g. 'e2e.p99 < 30s', 'throughput >= 100/s' or 'lost == 0'")
    metric, op, raw, window = match["metric"], match["op"], match["value"], match["window"]
    parts = metric.split(".")
    stage = agg = None
    relative = False
    is_latency = (len(parts) == 2 and parts[0] == "e2e") or (len(parts) == 3 and parts[0] == "stage")
    if window is not None and (window not in WINDOWS or not is_latency):
        fix = f"windows are {', '.join(WINDOWS)}, on latencies: e.g. e2e.p99[during] < 60s"
        raise bad(f"[{window}] is not a window of {metric!r}", fix)
    if metric == "throughput":
        kind: Kind = "rate"
        m = _RATE.match(raw) or _SHARE.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a rate", "write it per second (100/s) or as a share of the injection rate (90%)")
        value, relative = float(m["n"]), raw.endswith("%")
    elif metric in COUNTS:
        kind = "count"
        m = _COUNT.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a whole number", "counts compare to integers, e.g. lost == 0")
        value = float(m["n"])
    elif metric in SHARES:
        kind = "share"
        m = _SHARE.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a percentage", f"write it with %, e.g. {metric} < 0.1%")
        value = float(m["n"])
    elif metric == "recovery":
        kind = "latency"
        seconds = parse_duration(raw)
        if seconds is None:
            raise bad(f"{raw!r} is not a duration", DURATION_HINT)
        value = seconds
    elif len(parts) == 3 and (parts[0] in PASSIVE_FAMILIES or metric.startswith(API_RESPONSE + ".")):
        return _series_threshold(text, parts, op, raw, stages, bad)
    elif is_latency:
        kind, agg = "latency", parts[-1]
        if agg not in AGGREGATES:
            raise bad(f"unknown statistic {agg!r}", f"use one of {', '.join(AGGREGATES)}")
        if parts[0] == "stage":
            stage = parts[1]
            if stage not in stages:
                raise bad(f"unknown stage {stage!r}", f"configured stages: {', '.join(stages) or 'none'}")
        seconds = parse_duration(raw)
        if seconds is None:
            raise bad(f"{raw!r} is not a duration", DURATION_HINT)
        value = seconds
    else:
        known = ["e2e.<stat>[window]", "stage.<name>.<stat>[window]", "throughput", "recovery", *COUNTS, *SHARES]
        known += [f"{family}.<stage>.<stat>" for family in PASSIVE_FAMILIES] + [f"{API_RESPONSE}.<stat>", CONTRACT]
        raise bad(f"unknown metric {metric!r}", f"use one of {', '.join(known)}")
    threshold = Threshold(text.strip(), metric, op, value, kind, stage, agg, relative, window)
    never = _never_holds(threshold)
    if never:
        raise bad(f"can never pass ({never})", "fix the value or the operator")
    return threshold


def _series_threshold(
    text: str, parts: list[str], op: str, raw: str, stages: tuple[str, ...], bad: Callable[[str, str], ConfigError]
) -> Threshold:
    """``freshness.iceberg.max < 60s``, ``lag_records.consumer.max < 5000``, ``api.response.p95 < 500ms``."""
    family, stage, agg = parts
    if agg not in AGGREGATES:
        raise bad(f"unknown statistic {agg!r}", f"use one of {', '.join(AGGREGATES)}")
    series = API_RESPONSE if f"{family}.{stage}" == API_RESPONSE else f"{family}.{stage}"
    if series != API_RESPONSE and stage not in stages:
        raise bad(f"unknown stage {stage!r}", f"configured stages: {', '.join(stages) or 'none'}")
    kind = PASSIVE_FAMILIES.get(family, "latency")
    if kind == "count":
        m = _COUNT.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a whole number", f"records compare to integers, e.g. {series}.max < 10000")
        value = float(m["n"])
    else:
        seconds = parse_duration(raw)
        if seconds is None:
            raise bad(f"{raw!r} is not a duration", DURATION_HINT)
        value = seconds
    metric = ".".join(parts)
    threshold = Threshold(text.strip(), metric, op, value, kind, None, agg, series=series)
    never = _never_holds(threshold)
    if never:
        raise bad(f"can never pass ({never})", "fix the value or the operator")
    return threshold


def _never_holds(t: Threshold) -> str | None:
    """Why no observation could satisfy ``t``, if none could: every metric is >= 0, and shares (and a
    throughput relative to what was injected, which delivery cannot exceed) are <= 100 %."""
    low = 0.0
    high = 100.0 if t.kind == "share" or (t.kind == "rate" and t.relative) else math.inf
    can = {
        "<": t.value > low,
        "<=": t.value >= low,
        ">": t.value < high,
        ">=": t.value <= high,
        "==": low <= t.value <= high,
        "!=": True,
    }[t.op]
    if can:
        return None
    unit = "%" if high == 100.0 else ""
    return f"{t.metric} is always between {low:g} and {high:g}{unit}"


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
    # detection power: one-sided 95 % upper bound on the rate of what a count counts, in %
    rate_bound: float | None = None

    @property
    def observed_text(self) -> str:
        return "n/a" if self.observed is None else format_value(self.observed, self.kind)


@dataclass(frozen=True, slots=True)
class Tally:
    """Canaries with a property (lost, duplicated...) out of those that could have it, and why the
    count cannot be judged when it cannot (``inconclusive``: observed too little; ``not_applicable``:
    this configuration cannot observe it)."""

    count: int
    out_of: int
    detail: str
    inconclusive: str | None = None
    not_applicable: str | None = None

    @property
    def bound(self) -> float:
        """One-sided 95 % upper bound on the rate, in % (100 when nothing was observed)."""
        return 100 * upper_bound(self.count, self.out_of, CONFIDENCE)

    def power(self, what: str) -> str:
        """``0 of 1,000 lost: loss rate < 0.30% (95%)``."""
        if self.out_of == 0:
            return f"no canary to judge {what} on"
        return f"{self.count:,} of {self.out_of:,} {what}: rate < {self.bound:.2f}% (95%)"


@dataclass(frozen=True, slots=True)
class ThroughputFigures:
    """Delivered throughput as the estimator found it (see :mod:`pipeline_check.verdict.throughput`)."""

    delivered: float  # canaries/s over the whole run
    tail: float | None  # over the last part of the run (a late slowdown), when it has enough points
    injected_rate: float  # what the validator achieved
    steps: int  # distinct arrival times at the last stage
    detail: str
    limited: str | None = None  # why the validator, not the pipeline, set the pace
    span: float = 0.0  # seconds over which the delivered canaries were sent
    interval: float = 0.0  # the pipeline's batch interval, seconds (throughput.batch_interval)
    tail_upper: float | None = None  # the upper 95 % bound of ``tail``


@dataclass(frozen=True, slots=True)
class Series:
    """Samples of one sampled series (seconds; records for ``lag_records``), what they are, and why the
    series cannot be judged when it cannot (an idle pipeline, every sample failed)."""

    samples: Floats
    detail: str = ""
    inconclusive: str | None = None
    # what to change for more samples
    more: str = "sample for longer (passive.window) or more often (passive.interval)"


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the SLA engine judges: latency samples per series (``e2e`` and stage names; ``inf`` = not
    delivered), tallies by count name, throughput and coverage."""

    latencies: Mapping[str, Floats]
    tallies: Mapping[str, Tally]
    throughput: ThroughputFigures
    coverage: Tally  # shards (partitions) with no canary, out of the shards declared
    injected: int
    extra_min_samples: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)
    recovery: Recovery | None = None  # None: the scenario has no faults
    series: Mapping[str, Series] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recovery:
    """How long after its end each fault the pipeline was fresh again for good: seconds from the fault's
    end to the first canary sent after it that met the freshness limit, every later one meeting it too
    (``inf``: it never did). ``inconclusive``: too few canaries sent after some fault."""

    seconds: float
    detail: str
    inconclusive: str | None = None


def evaluate(threshold: Threshold, m: Measurements) -> CheckResult:
    """Judge one threshold; too few samples is inconclusive, never a pass."""
    if threshold.series is not None:
        return evaluate_series(threshold, m.series.get(threshold.series))
    if threshold.kind == "contract":
        return _result(
            threshold, Status.INCONCLUSIVE, None,
            "the contract is checked by `pipeline-check validate` and `pipeline-check contract` "
            "(pipeline_check.runs.passive), not by a bare engine run", 0,
        )  # fmt: skip
    if threshold.kind == "latency":
        return _latency(threshold, m)
    if threshold.kind == "rate":
        return _throughput(threshold, m)
    if threshold.metric == "coverage":
        return _coverage(threshold, m.coverage)
    if threshold.kind == "share":
        return _rate(threshold, m.tallies[RATES[threshold.metric]])
    return _count(threshold, m)


def _result(
    t: Threshold, status: Status, observed: float | None, detail: str, n: int, rate_bound: float | None = None
) -> CheckResult:
    return CheckResult(t.text, status, observed, t.text, detail, n, t.kind, rate_bound)


def _latency(t: Threshold, m: Measurements) -> CheckResult:
    if t.metric == "recovery":
        return _recovery(t, m.recovery)
    series = "e2e" if t.stage is None else t.stage
    if t.window is not None:
        if m.recovery is None:
            return _result(t, Status.NOT_APPLICABLE, None, f"[{t.window}] needs a scenario with faults", 0)
        series = f"{series}[{t.window}]"
    samples = m.latencies.get(series, np.zeros(0))
    n = len(samples)
    agg = t.aggregate or "max"
    needed = max(min_samples(agg), m.extra_min_samples)
    if n < needed:
        return _result(
            t,
            Status.INCONCLUSIVE,
            None,
            f"too few samples for {agg} of {series} latency: {n} < {needed}; inject more canaries",
            n,
        )
    observed = aggregate(samples, agg)
    never = int(np.isinf(samples).sum())
    detail = f"{agg} of {n} {series} latencies" + (
        f" ({never} never arrived, counted as infinitely late)" if never else ""
    )
    return _result(t, Status.PASSED if t.holds(observed) else Status.FAILED, observed, detail, n)


def _recovery(t: Threshold, recovery: Recovery | None) -> CheckResult:
    if recovery is None:
        return _result(t, Status.NOT_APPLICABLE, None, "the scenario has no faults to recover from", 0)
    if recovery.inconclusive:
        return _result(t, Status.INCONCLUSIVE, None, recovery.inconclusive, 0)
    status = Status.PASSED if t.holds(recovery.seconds) else Status.FAILED
    return _result(t, status, recovery.seconds, recovery.detail, 1)


def evaluate_series(t: Threshold, series: Series | None) -> CheckResult:
    """Judge a threshold on a sampled series; a series not measured, or with nothing to judge, is
    inconclusive."""
    name = t.series or t.metric
    if series is None:
        how = (
            "passive runs sample it (validate --passive)"
            if t.passive_only
            else "API response times are judged by `pipeline-check validate` (pipeline_check.runs.passive)"
        )
        return _result(t, Status.INCONCLUSIVE, None, f"{name} was not measured by this run: {how}", 0)
    n = len(series.samples)
    if series.inconclusive:
        return _result(t, Status.INCONCLUSIVE, None, series.inconclusive, n)
    agg = t.aggregate or "max"
    needed = min_samples(agg)
    if n < needed:
        return _result(
            t, Status.INCONCLUSIVE, None, f"too few samples for {agg} of {name}: {n} < {needed}; {series.more}", n
        )
    observed = aggregate(series.samples, agg)
    detail = f"{agg} of {n} samples of {name}" + (f"; {series.detail}" if series.detail else "")
    return _result(t, Status.PASSED if t.holds(observed) else Status.FAILED, observed, detail, n)


def _throughput(t: Threshold, m: Measurements) -> CheckResult:
    f = m.throughput
    reference = f.injected_rate
    floor = (
        f"; floor {t.value:g}% of the achieved injection rate {reference:.1f}/s = {t.value / 100 * reference:.1f}/s"
        if t.relative
        else ""
    )
    if f.limited:
        return _result(t, Status.INCONCLUSIVE, f.delivered or None, f"validator-limited: {f.limited}{floor}", f.steps)
    if not t.relative and t.op in (">", ">=") and reference < t.value:
        why = f"injected at {reference:.1f}/s, below the {t.value:g}/s floor; lower it or give the validator more CPU"
        return _result(t, Status.INCONCLUSIVE, f.delivered or None, f"validator-limited: {why}", f.steps)
    if f.steps < MIN_DELIVERY_STEPS or f.span < MIN_DELIVERY_STEPS * f.interval:
        return _result(
            t, Status.INCONCLUSIVE, None,
            f"too little to judge a rate on: {f.steps} delivery steps (need {MIN_DELIVERY_STEPS}) over {f.span:.1f}s "
            f"of injection (need {MIN_DELIVERY_STEPS} x the batch interval, {f.interval:.2f}s); "
            "inject for longer (load.count / load.rate)",
            f.steps,
        )  # fmt: skip
    observed, tail = f.delivered, ""
    if f.tail is not None:
        bound = "" if f.tail_upper is None else f" (at most {f.tail_upper:.1f}/s, 95%)"
        tail = f"; last part of the run {f.tail:.1f}/s{bound} vs whole run {f.delivered:.1f}/s"
        # the tail rests on few points, so it decides only when even its upper bound misses the floor
        if f.tail_upper is not None and not t.holds(f.tail_upper, reference):
            observed = min(observed, f.tail)
    status = Status.PASSED if t.holds(observed, reference) else Status.FAILED
    return _result(t, status, observed, f"{f.detail}{tail}{floor}", f.steps)


def _coverage(t: Threshold, tally: Tally) -> CheckResult:
    if tally.not_applicable:
        return _result(t, Status.NOT_APPLICABLE, None, tally.not_applicable, 0)
    covered = 100.0 * (tally.out_of - tally.count) / tally.out_of if tally.out_of else 0.0
    status = Status.PASSED if t.holds(covered) else Status.FAILED
    return _result(t, status, covered, tally.detail, tally.out_of)


def _rate(t: Threshold, tally: Tally) -> CheckResult:
    if tally.not_applicable or tally.inconclusive:
        return _unjudged(t, tally)
    n = tally.out_of
    rate = 100.0 * tally.count / n if n else 0.0
    bound = tally.bound
    power = tally.power(t.metric.removesuffix("_rate"))
    if t.op in ("<", "<="):
        # the bound must clear the threshold: a rate below it, shown with 95 % confidence
        if t.holds(bound):
            status, why = Status.PASSED, ""
        elif not t.holds(rate):
            status, why = Status.FAILED, ""
        else:
            status, why = Status.INCONCLUSIVE, f"; the bound is not below {t.value:g}%: inject more canaries"
    else:
        status, why = (Status.PASSED if t.holds(rate) else Status.FAILED), ""
    return _result(t, status, rate, f"{power}{why}; {tally.detail}", n, rate_bound=bound)


def _count(t: Threshold, m: Measurements) -> CheckResult:
    tally = m.tallies[t.metric]
    if tally.not_applicable or tally.inconclusive:
        return _unjudged(t, tally)
    if m.injected < max(1, m.extra_min_samples):
        return _result(t, Status.INCONCLUSIVE, None, f"too few canaries: {m.injected}", m.injected)
    status = Status.PASSED if t.holds(tally.count) else Status.FAILED
    bound = tally.bound if tally.out_of and t.metric != "delivered" else None
    power = f"{tally.power(t.metric)}; " if bound is not None else ""
    return _result(t, status, float(tally.count), f"{power}{tally.detail}", tally.out_of, rate_bound=bound)


def _unjudged(t: Threshold, tally: Tally) -> CheckResult:
    if tally.not_applicable:
        return _result(t, Status.NOT_APPLICABLE, None, tally.not_applicable, 0)
    return _result(t, Status.INCONCLUSIVE, None, tally.inconclusive or "", tally.out_of)
