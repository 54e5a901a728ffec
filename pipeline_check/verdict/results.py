"""A check's result: the outcome of one threshold, and how its observed value reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pipeline_check.verdict.status import Status

Kind = Literal["latency", "rate", "count", "share", "contract"]


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
