"""Deadlines and adaptive poll intervals: the only way pipeline-check waits for anything."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Deadline:
    """A point on the monotonic clock; ``remaining`` never goes below zero."""

    end: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def intervals(initial: float = 0.02, cap: float = 0.5, factor: float = 1.5) -> Iterator[float]:
    """Poll intervals that start short (fast answers are common) and grow to ``cap``."""
    interval = initial
    while True:
        yield interval
        interval = min(cap, interval * factor)


def poll(check: Callable[[], T | None], timeout: float, *, initial: float = 0.02, cap: float = 0.5) -> T | None:
    """Call ``check`` until it returns a truthy value (returned) or ``timeout`` passes (None)."""
    deadline = Deadline.after(timeout)
    for interval in intervals(initial, cap):
        result = check()
        if result:
            return result
        if deadline.expired():
            return None
        time.sleep(min(interval, deadline.remaining()))
    raise AssertionError("unreachable")  # pragma: no cover
