"""Judging a threshold against a run's measurements, or a sampled series: passed, failed, inconclusive (too
few samples; nothing compared; nothing judged; the validator's own injection fell behind; a bound finer
than the probes can tell) or not applicable (this configuration cannot observe it), never a pass by default.

Sampled series (freshness, lag, API response times) are judged like latencies, on their samples: a series
that saw nothing to judge (an idle pipeline) is inconclusive, never passed. A percentile needs enough
samples to mean anything (p99 needs 100). A latency percentile over canaries some of whose latencies were
not measured (found by a last sweep) is taken with those at both extremes: it passes only when the worst
case passes, fails when even the best case fails, and is inconclusive in between. A latency bound tighter
than the resolution of the probes a latency spans is inconclusive, unless the latency exceeds it by more
than that resolution (then it fails).

A rate threshold (``<``, ``<=`` or ``==``: an upper limit) fails when the observed rate breaks the limit and
passes only when the one-sided 95 % upper bound on the rate keeps it, so it demands enough canaries; the
limit of ``<=`` and ``==`` is read at the precision it is written with (``0%`` passes below 0.5 %, ``0.0%``
below 0.05 %). A count that judged no canary is inconclusive, and a run in which no canary reached the last
stage is never passed, whatever its thresholds (:func:`judge`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline_check.verdict.measurements import Measurements, Recovery, Series, Tally
from pipeline_check.verdict.results import CheckResult, format_value
from pipeline_check.verdict.statistics import aggregate, extremes, min_samples
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import Threshold

# A delivered rate is a slope through the arrival steps but the last: fewer steps than this leave too
# few points for a slope that one batch's phase cannot swing.
MIN_DELIVERY_STEPS = 5


NOTHING_DELIVERED = "delivered > 0"  # the check every run gets when nothing reached the last stage


def judge(thresholds: Iterable[Threshold], m: Measurements, *, guard_always: bool = False) -> list[CheckResult]:
    """Every threshold judged; a run that delivered nothing also gets a failed ``delivered > 0`` (or an
    inconclusive one, when nothing was injected), so no choice of thresholds makes it pass. With
    ``guard_always`` that check is there when something was delivered too (passed): a watch publishes every
    window's checks under the same names."""
    results = [evaluate(t, m) for t in thresholds]
    delivered = m.tallies.get("delivered")
    judged = any(r.threshold == NOTHING_DELIVERED for r in results)  # asked for in so many words
    if delivered is None or judged or (delivered.count and not guard_always):
        return results
    if delivered.count:
        status = Status.PASSED
        why = delivered.detail
    else:
        status = Status.FAILED if m.injected else Status.INCONCLUSIVE
        why = f"{delivered.detail}: a run that delivered no canary never passes, whatever its thresholds"
    results.append(
        CheckResult(NOTHING_DELIVERED, status, float(delivered.count), NOTHING_DELIVERED, why, m.injected, "count")
    )
    return results


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
        return _rate(threshold, m.tallies[threshold.count])
    return _count(threshold, m)


def _result(
    t: Threshold, status: Status, observed: float | None, detail: str, n: int, rate_bound: float | None = None
) -> CheckResult:
    return CheckResult(t.text, status, observed, t.text, detail, n, t.kind, rate_bound)


def _latency(t: Threshold, m: Measurements) -> CheckResult:
    if t.metric == "recovery":
        return _recovery(t, m.recovery)
    series = "e2e" if t.stage is None else t.stage
    coarse = m.resolution.get(series)
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
    best, worst = extremes(samples, agg)
    if t.op in (">", ">="):
        best, worst = worst, best
    if coarse is not None and t.op in ("<", "<=") and t.value < coarse[0]:
        # a bound finer than the probes can tell decides nothing, unless even the best case less the
        # resolution breaks it (1.2 s known to ±0.1 s is over 1 ms whatever the probes missed)
        least = best - coarse[0]
        if not (least >= t.value if t.op == "<" else least > t.value):
            return _result(
                t, Status.INCONCLUSIVE, None,
                f"{series} latencies are known to ±{coarse[0]:.2f}s ({coarse[1]}): coarser than the {t.value:g}s "
                "bound; make the probes look more often (their poll_interval)",
                n,
            )  # fmt: skip
    never = int(np.isinf(samples).sum())
    unmeasured = int(np.isnan(samples).sum())
    detail = f"{agg} of {n} {series} latencies" + (
        f" ({never} never arrived, counted as infinitely late)" if never else ""
    )
    if coarse is not None and coarse[0]:
        detail += f"; ±{coarse[0]:.2f}s"
    if unmeasured:
        detail += (
            f"; {unmeasured} found only by a last look have no measured latency, taken at both extremes: "
            f"{agg} between {format_value(min(best, worst), 'latency')} and {format_value(max(best, worst), 'latency')}"
        )
    if t.holds(worst):
        return _result(t, Status.PASSED, worst, detail, n)
    if not t.holds(best):
        return _result(t, Status.FAILED, best, detail, n)
    return _result(t, Status.INCONCLUSIVE, None, detail, n)


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
    """The delivered rate (one figure: the report's too) against the floor; the basis of a relative floor is
    the rate the injector achieved over every canary it sent."""
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
        # the configured rate is at least the floor (checked at load): the injector fell behind its schedule
        why = f"the injector fell behind its schedule, to {reference:.1f}/s, below the {t.value:g}/s floor"
        return _result(t, Status.INCONCLUSIVE, f.delivered or None, f"validator-limited: {why}", f.steps)
    if f.steps < MIN_DELIVERY_STEPS or f.span < MIN_DELIVERY_STEPS * f.interval:
        return _result(
            t, Status.INCONCLUSIVE, None,
            f"too little to judge a rate on: {f.steps} delivery steps (need {MIN_DELIVERY_STEPS}) over {f.span:.1f}s "
            f"of injection (need {MIN_DELIVERY_STEPS} x the batch interval, {f.interval:.2f}s); "
            "inject for longer (load.count / load.rate)",
            f.steps,
        )  # fmt: skip
    tail = ""
    if f.tail is not None:
        bound = "" if f.tail_upper is None else f" (at most {f.tail_upper:.1f}/s, 95%)"
        tail = f"; last part of the run {f.tail:.1f}/s{bound}"
    status = Status.PASSED if t.holds(f.delivered, reference) else Status.FAILED
    return _result(t, status, f.delivered, f"{f.detail}{tail}{floor}", f.steps)


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
    if n == 0:
        return _result(t, Status.INCONCLUSIVE, None, f"{tally.power()}; {tally.detail}", 0)
    rate = 100.0 * tally.count / n
    bound = tally.bound
    why = ""
    if t.op in ("<", "<=", "=="):
        # an upper limit: broken by the rate observed, kept only by the rate's 95 % upper bound
        limit = t.value if t.op == "<" else t.value + t.step / 2
        broken = rate >= t.value if t.op == "<" else rate > t.value
        if broken:
            status = Status.FAILED
        elif bound < limit:
            status = Status.PASSED
        else:
            status = Status.INCONCLUSIVE
            written = "" if t.op == "<" else f" (the {t.value:g}% limit, read to its last written digit)"
            why = f"; the bound is not below {limit:g}%{written}: inject more canaries"
    else:
        status = Status.PASSED if t.holds(rate) else Status.FAILED
    return _result(t, status, rate, f"{tally.power()}{why}; {tally.detail}", n, rate_bound=bound)


def _count(t: Threshold, m: Measurements) -> CheckResult:
    tally = m.tallies[t.count]
    if tally.not_applicable or tally.inconclusive:
        return _unjudged(t, tally)
    if m.injected < max(1, m.extra_min_samples):
        return _result(t, Status.INCONCLUSIVE, None, f"too few canaries: {m.injected}", m.injected)
    if tally.out_of == 0:
        return _result(t, Status.INCONCLUSIVE, None, f"{tally.power()}; {tally.detail}", 0)
    status = Status.PASSED if t.holds(tally.count) else Status.FAILED
    bound = tally.bound if t.metric.split(".")[0] != "delivered" else None
    power = f"{tally.power()}; " if bound is not None else ""
    return _result(t, status, float(tally.count), f"{power}{tally.detail}", tally.out_of, rate_bound=bound)


def _unjudged(t: Threshold, tally: Tally) -> CheckResult:
    if tally.not_applicable:
        return _result(t, Status.NOT_APPLICABLE, None, tally.not_applicable, 0)
    return _result(t, Status.INCONCLUSIVE, None, tally.inconclusive or "", tally.out_of)
