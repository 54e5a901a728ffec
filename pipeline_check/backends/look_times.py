"""How often a probe looked: the median gap between its looks is the resolution of its times."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(slots=True)
class LookTimes:
    """Gaps between successive looks, kept as a bounded sample (the median is all that is reported)."""

    last: float | None = None
    gaps: list[float] = field(default_factory=list)
    limit: int = 10_000

    def look(self, at: float) -> None:
        if self.last is not None and len(self.gaps) < self.limit:
            self.gaps.append(at - self.last)
        self.last = at

    @property
    def median(self) -> float:
        return statistics.median(self.gaps) if self.gaps else 0.0
