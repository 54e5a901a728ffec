"""The Load protocol: a stage type that answers its users' queries (an API) and can be asked them
concurrently, ``load.api_concurrency`` workers for a run's duration; the query mix, and the figures a load
adds to a report.

Each worker asks, one request at a time, for a symbol of the run and a time window inside what the run
covers (0.5 to 10 s long, :class:`QueryMix`). Before the load starts the same mix is asked one request at
a time: the idle response times the loaded ones are compared with.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.figures import ResponseFigures
from pipeline_check.verdict.response_times import ResponseTimes

MIN_WINDOW_MS, MAX_WINDOW_MS = 500, 10_000


@dataclass(frozen=True, slots=True)
class QueryMix:
    """What the load asks: one of ``symbols``, a window ending between ``since_ms()`` and now."""

    symbols: tuple[str, ...]
    since_ms: Callable[[], int]
    now_ms: Callable[[], int]

    def draw(self, rng: random.Random) -> tuple[str, int, int]:
        now, since = self.now_ms(), self.since_ms()
        end = rng.randint(min(since, now), now)
        length = rng.randint(MIN_WINDOW_MS, MAX_WINDOW_MS)
        return rng.choice(self.symbols), end - length, end


class Load(Protocol):
    """Concurrent bounded queries against one stage; ``idle`` and ``loaded`` hold their response times.
    ``tags``: the ``(lo, hi)`` tag range queries may name (a run's), None for any. ``measure_idle`` asks the
    mix one request at a time before the load; ``start`` starts the workers; ``stop`` stops them and
    releases everything (it runs whatever happened, once)."""

    Settings: ClassVar[type[PluginSettings]]
    concurrency: int
    idle: ResponseTimes
    loaded: ResponseTimes

    def __init__(
        self,
        settings: Any,
        stage: str,
        concurrency: int,
        mix: QueryMix,
        *,
        seed: int = 0,
        tags: tuple[int, int] | None = None,
    ) -> None: ...

    async def measure_idle(self) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def response_figures(
    requests: ResponseTimes, load: Load | None, freshness: Mapping[str, Mapping[str, float]]
) -> ResponseFigures:
    """The report's API response times; with a load, its idle and loaded times, the p95 ratio and the
    freshness measured while it ran."""
    if load is None:
        return ResponseFigures(requests.stats(), requests.failed)
    idle, loaded = load.idle.stats(), load.loaded.stats()
    ratio = loaded["p95"] / idle["p95"] if idle.get("p95") and "p95" in loaded else None
    return ResponseFigures(
        requests.stats(),
        requests.failed,
        concurrency=load.concurrency,
        idle=idle,
        loaded=loaded,
        loaded_failed=load.loaded.failed,
        degradation=ratio,
        freshness_under_load={name: dict(stats) for name, stats in freshness.items()},
    )
