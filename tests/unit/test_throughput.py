"""The delivered-throughput estimator on synthetic arrivals: batches, stalls, lag, late slowdowns."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pipeline_check.verdict.throughput import batch_interval, delivered_rate, slope_bounds


def next_batch(at: float, interval: float = 0.5) -> float:
    """When a pipeline committing every ``interval`` seconds delivers what it holds at ``at``."""
    return (at // interval + 1) * interval


def estimate(arrival: Callable[[int, float], float], count: int = 100, rate: float = 50.0):  # type: ignore[no-untyped-def]
    sent = np.arange(count) / rate
    return delivered_rate(sent, np.array([arrival(seq, t) for seq, t in enumerate(sent)]))


@pytest.mark.parametrize(
    ("arrival", "expected"),
    [
        # keeps up in 0.5 s batches: steps must not read as a slower rate, whatever their phase
        (lambda seq, t: next_batch(t + 0.3), 50.0),
        (lambda seq, t: next_batch(t + 0.05), 50.0),
        # keeps up, but the last tenth is seen 0.25 s late (a probe's interval grew)
        (lambda seq, t: t + 0.3 + (0.25 if seq >= 90 else 0.0), 50.0),
        # keeps up, but one batch in the middle stalls for 1.5 s: a transient, not a slow pipeline
        (lambda seq, t: next_batch(t + 0.3) + (1.5 if 40 <= seq < 50 else 0.0), 50.0),
        # falls behind: one canary every 40 ms reaches the end
        (lambda seq, t: 0.3 + 2 * t, 25.0),
        # falls behind in batches: takes 40 canaries a second, commits every 0.5 s
        (lambda seq, t: next_batch(seq / 40 + 0.1), 40.0),
    ],
)
def test_batched_late_stalled_and_lagging_deliveries(arrival: Callable[[int, float], float], expected: float) -> None:
    e = estimate(arrival)
    assert e.rate == pytest.approx(expected, rel=0.02)
    assert e.injected_rate == pytest.approx(50.0)
    assert e.steps >= 3


def test_a_slowdown_in_the_last_part_shows_in_the_tail() -> None:
    # keeps up for 80 % of the run, then delivers at half the rate: the whole-run median outvotes it
    e = estimate(lambda seq, t: t + 0.2 if seq < 400 else 8.2 + 2 * (t - 8.0), count=500)
    assert e.rate == pytest.approx(50.0, rel=0.05)
    assert e.tail is not None and e.tail == pytest.approx(25.0, rel=0.1)
    assert e.tail_upper is not None and e.tail <= e.tail_upper < 0.9 * 50.0  # a slowdown beyond doubt


@pytest.mark.parametrize("seed", range(20))
def test_a_tail_that_only_jitter_moves_does_not_miss_the_floor(seed: int) -> None:
    # keeps up in 0.5 s batches over 20 s, each seen up to 0.4 s late by a polling probe: whatever the
    # jitter, the tail's upper bound does not exclude keeping up
    jitter = np.random.default_rng(seed).uniform(0, 0.4, 100)
    e = estimate(lambda seq, t: next_batch(t + 0.05) + jitter[int(next_batch(t + 0.05) * 2)], count=1000)
    assert e.tail is not None and e.tail_upper is not None
    assert e.tail_upper >= 0.9 * 50.0 and e.rate >= 0.9 * 50.0, (e.rate, e.tail, e.tail_upper)


def test_sen_bounds_hold_the_median_slope() -> None:
    slopes = np.sort(np.random.default_rng(1).normal(1.0, 0.1, 45))  # the 45 pairs of 10 points
    low, high = slope_bounds(slopes)
    assert low < float(np.median(slopes)) < high


def test_a_tail_of_few_batches_is_not_judged_on_its_own() -> None:
    # keeps up, committing every 0.3 s: the last 30 % of a 2 s run spans two batches, too few for a slope
    e = estimate(lambda seq, t: next_batch(t + 0.3, 0.3))
    assert e.tail is None and e.rate == pytest.approx(50.0, rel=0.05)


def test_few_arrival_steps_are_counted() -> None:
    # a consumer that holds batches for 35 s: three deliveries for the whole run
    e = estimate(lambda seq, t: 35.0 if seq < 40 else (70.0 if seq < 80 else 105.0))
    assert e.steps == 3
    assert e.longest_gap == pytest.approx(35.0)


def test_one_delivery_makes_no_rate() -> None:
    e = delivered_rate(np.array([1.0]), np.array([2.0]))
    assert (e.rate, e.steps, e.tail) == (0.0, 0, None)


def test_the_batch_interval_is_the_gap_most_of_the_run_falls_in() -> None:
    # one 10 s stall in a run of 1 s batches is not the batch interval; a batch seen in two polls
    # 0.1 s apart does not halve it
    assert batch_interval(np.array([1.0] * 50 + [10.0])) == pytest.approx(1.0)
    assert batch_interval(np.array([0.1, 19.9, 0.1, 19.9, 0.1])) == pytest.approx(19.9)
    assert batch_interval(np.array([], dtype=np.float64)) == 0.0


def test_a_stall_in_a_long_run_leaves_the_rate_judged_on_the_batch_interval() -> None:
    # 1 s batches for a minute, one of them held 8 s: still 1 s per batch, and the rate is the injection's
    e = estimate(lambda seq, t: next_batch(t, 1.0) if not 20 <= t < 28 else 28.0, count=3000)
    assert e.interval == pytest.approx(1.0) and e.longest_gap >= 8
    assert e.rate == pytest.approx(50.0, rel=0.05)
