"""API response times: every request a probe, sampler or load worker makes is timed into one of these."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from pipeline_check.verdict.statistics import Floats, latency_stats

T = TypeVar("T")
LIMIT = 200_000  # samples kept: a bounded memory whatever the run's length


@dataclass(slots=True)
class ResponseTimes:
    """Seconds from request to complete answer (body read). A request that got no answer (a timeout, a
    refused connection) counts as infinitely slow, as an undelivered canary counts as infinitely late:
    percentiles over failures read ``inf``, never a pass."""

    seconds: list[float] = field(default_factory=list)
    failed: int = 0

    async def timed(self, request: Callable[[], Awaitable[T]]) -> T:
        """Await ``request()``, timing it; one that raises counts as failed (``inf``) and re-raises."""
        began = time.perf_counter()
        try:
            result = await request()
        except Exception:
            self.failed += 1
            self._add(math.inf)
            raise
        self._add(time.perf_counter() - began)
        return result

    def _add(self, seconds: float) -> None:
        if len(self.seconds) < LIMIT:
            self.seconds.append(seconds)

    @property
    def samples(self) -> Floats:
        return np.asarray(self.seconds, dtype=np.float64)

    def stats(self) -> dict[str, float]:
        """p50/p95/p99/max and n (empty without a sample)."""
        return latency_stats(self.samples)
