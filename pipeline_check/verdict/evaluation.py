"""Judging a threshold against a run's measurements, or a sampled series: passed, failed, inconclusive (too
few samples; nothing compared; the validator's own injection fell behind) or not applicable (this
configuration cannot observe it), never a pass by default.

Sampled series (freshness, lag, API response times) are judged like latencies, on their samples: a series
that saw nothing to judge (an idle pipeline) is inconclusive, never passed. A percentile needs enough
samples to mean anything (p99 needs 100). A rate threshold passes only when the one-sided 95 % upper bound
on the rate is below it, so it demands enough canaries.
"""

from __future__ import annotations

import numpy as np

from pipeline_check.verdict.measurements import Measurements, Recovery, Series, Tally
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.statistics import aggregate, min_samples
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import RATES, Threshold

# A delivered rate is a slope through the arrival steps but the last: fewer steps than this leave too
# few points for a slope that one batch's phase cannot swing.
MIN_DELIVERY_STEPS = 5


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
