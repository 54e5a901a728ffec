"""SLA thresholds in a k6-like grammar: parsed once, when the config loads.

::

    threshold := metric OP value
    metric    := "e2e." AGG [WINDOW] | "stage." STAGE "." AGG [WINDOW] | "throughput" | "recovery"
               | COUNT ["." STAGE] | SHARE | RATE "." STAGE | FAMILY "." STAGE "." AGG | "api.response." AGG
    WINDOW    := "[before]" | "[during]" | "[after]"   canaries sent before, during or after the faults
    FAMILY    := freshness | lag | lag_records | snapshot_age      (sampled by passive runs)
    AGG       := p50 | p90 | p95 | p99 | p999 | min | max | avg
    COUNT     := lost | duplicates | corrupted | retracted | incomplete | out_of_order | delivered
    SHARE     := RATE | coverage
    RATE      := loss_rate | duplicate_rate | corrupt_rate
    OP        := < | <= | > | >= | == | !=
    value     := duration (500ms, 30s, 2m) | rate (100/s, or 90% of the achieved injection rate)
               | integer for counts and lag_records | percentage for shares
    contract  := "contract"                                            (the stages' declared contract holds)

Examples: ``e2e.p99 < 30s``, ``stage.iceberg.p95 < 10s``, ``throughput >= 100/s``, ``lost == 0``,
``loss_rate < 0.1%``, ``coverage == 100%``, ``e2e.p99[during] < 60s``, ``recovery < 30s``,
``freshness.iceberg.max < 60s``, ``lag.consumer.p99 < 30s``, ``api.response.p95 < 500ms``, ``contract``.
A count or a rate with a stage is judged at that stage only: ``duplicates.iceberg == 0``,
``corrupted.api == 0``, ``retracted.iceberg == 0``, ``lost.iceberg == 0`` (never seen there),
``duplicate_rate.kafka < 1%``.

A threshold that can never pass (``lost < 0``, ``coverage > 100%``) or the same threshold twice is an error
when the config loads. How each is judged: :mod:`pipeline_check.verdict.evaluation`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline_check.core.durations import HINT as DURATION_HINT
from pipeline_check.core.durations import parse_duration
from pipeline_check.core.errors import ConfigError
from pipeline_check.verdict.results import Kind

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

_THRESHOLD = re.compile(
    r"^\s*(?P<metric>[a-z0-9_.]+)(?:\[(?P<window>[a-z]+)\])?\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$"
)
WINDOWS = ("before", "during", "after")
_NUMBER = r"(?P<n>\d+(?:\.\d+)?)"
_RATE = re.compile(rf"^{_NUMBER}\s*/\s*s$")
_SHARE = re.compile(rf"^{_NUMBER}\s*%$")
_COUNT = re.compile(r"^(?P<n>\d+)$")


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
    step: float = 1.0  # a share's precision as written: the unit of its last digit ("0%": 1, "0.1%": 0.1)

    @property
    def count(self) -> str:
        """The count a count or share threshold judges (``duplicates``, ``lost`` for ``loss_rate``), with
        its stage where it names one (``duplicates.iceberg``): the key of its tally."""
        base = self.metric.split(".")[0]
        base = RATES.get(base, base)
        return base if self.stage is None else f"{base}.{self.stage}"

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


def e2e_bound(thresholds: Iterable[Threshold]) -> float | None:
    """The largest upper bound on an end-to-end latency (``e2e.p99 < 30s``, windows too): a canary has
    until then, after its injection, to be delivered in time; None without such a threshold."""
    bounds = [
        t.value
        for t in thresholds
        if t.kind == "latency" and t.metric.startswith("e2e.") and t.series is None and t.op in ("<", "<=")
    ]
    return max(bounds, default=None)


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
    step = 1.0
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
    elif parts[0] in COUNTS and len(parts) <= 2:
        kind = "count"
        stage = _stage_of(parts, stages, bad)
        m = _COUNT.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a whole number", "counts compare to integers, e.g. lost == 0")
        value = float(m["n"])
    elif metric in SHARES or (len(parts) == 2 and parts[0] in RATES):
        kind = "share"
        stage = _stage_of(parts, stages, bad)
        m = _SHARE.match(raw)
        if not m:
            raise bad(f"{raw!r} is not a percentage", f"write it with %, e.g. {metric} < 0.1%")
        value = float(m["n"])
        step = 10.0 ** -len(m["n"].partition(".")[2])
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
        known += ["<count>.<stage>", "<rate>.<stage>"]
        known += [f"{family}.<stage>.<stat>" for family in PASSIVE_FAMILIES] + [f"{API_RESPONSE}.<stat>", CONTRACT]
        raise bad(f"unknown metric {metric!r}", f"use one of {', '.join(known)}")
    threshold = Threshold(text.strip(), metric, op, value, kind, stage, agg, relative, window, step=step)
    never = _never_holds(threshold)
    if never:
        raise bad(f"can never pass ({never})", "fix the value or the operator")
    return threshold


def _stage_of(parts: list[str], stages: tuple[str, ...], bad: Callable[[str, str], ConfigError]) -> str | None:
    """The stage a count or rate names after its dot (None: the whole run)."""
    if len(parts) == 1:
        return None
    if parts[1] not in stages:
        raise bad(f"unknown stage {parts[1]!r}", f"configured stages: {', '.join(stages) or 'none'}")
    return parts[1]


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
