"""The run's clock: monotonic for every measurement, converted to wall time with one offset per run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic seconds for intervals; ``wall`` maps them to epoch seconds with a fixed offset, so a
    wall-clock step during the run never bends a latency."""

    offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def wall(self, mono: float) -> float:
        return mono + self.offset

    def wall_ms(self, mono: float) -> int:
        return int((mono + self.offset) * 1000)
