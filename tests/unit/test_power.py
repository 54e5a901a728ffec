"""Detection power: the one-sided Clopper-Pearson bound against reference values (scipy.special.betaincinv)."""

from __future__ import annotations

import pytest

from pipeline_check.verdict.detection_power import upper_bound


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 100, 0.029513049607039925),
        (1, 100, 0.046559811453538935),
        (5, 1000, 0.010484076911415651),
        (50, 1000, 0.06286340351237973),
        (999, 1000, 0.999948708021091),
        (3, 10, 0.6066242161054123),
    ],
)
def test_matches_the_exact_bound(k: int, n: int, expected: float) -> None:
    assert upper_bound(k, n) == pytest.approx(expected, rel=1e-8)


def test_zero_of_n_has_a_closed_form() -> None:
    assert upper_bound(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert upper_bound(0, 1000) * 100 == pytest.approx(0.2991, abs=1e-4)  # "0 of 1,000: below 0.30 %"


@pytest.mark.parametrize(("k", "n"), [(0, 0), (5, 5), (7, 3)])
def test_nothing_to_go_on_bounds_nothing(k: int, n: int) -> None:
    assert upper_bound(k, n) == 1.0


def test_more_canaries_tighten_the_bound() -> None:
    bounds = [upper_bound(0, n) for n in (10, 100, 1000, 10_000)]
    assert bounds == sorted(bounds, reverse=True)
    assert upper_bound(5_000, 1_000_000) == pytest.approx(0.0051, abs=1e-4)
