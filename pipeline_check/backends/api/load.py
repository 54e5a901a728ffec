"""API load: ``load.api_concurrency`` workers asking the API realistic questions for the run's duration.

Each worker asks, one request at a time and ``PAUSE`` after each answer (a dashboard refreshing), for a
symbol of the run and a time window inside what the run covers (0.5 to 10 s long). Before the load starts the
same mix is asked one request at a time (``IDLE_REQUESTS`` of them): the idle response times the loaded
ones are compared with. Requests are bounded in number and time; the workers stop with the run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from pipeline_check.backends.api.reader import ApiReader
from pipeline_check.verdict.figures import ResponseFigures
from pipeline_check.verdict.response_times import ResponseTimes

IDLE_REQUESTS = 20  # enough for an idle p95
PAUSE = 0.25  # seconds between an answer and the worker's next request
MAX_REQUESTS = 100_000  # over all workers
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


class ApiLoad:
    """Concurrent bounded queries against the API; ``idle`` and ``loaded`` hold their response times."""

    def __init__(self, reader: ApiReader, concurrency: int, mix: QueryMix, *, seed: int = 0) -> None:
        self.reader = reader
        self.concurrency = concurrency
        self.mix = mix
        self.rng = random.Random(seed)
        self.idle = ResponseTimes()
        self.loaded = ResponseTimes()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sent = 0

    async def measure_idle(self, requests: int = IDLE_REQUESTS) -> None:
        """The mix one request at a time, before any load."""
        for _ in range(requests):
            await self._ask(self.idle)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"api-load:{i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        """Stop the workers (each finishes its request) and close the client."""
        self._stop.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.reader.close()

    async def _worker(self) -> None:
        while not self._stop.is_set() and self._sent < MAX_REQUESTS:
            self._sent += 1
            await self._ask(self.loaded)
            await asyncio.sleep(PAUSE)

    async def _ask(self, times: ResponseTimes) -> None:
        symbol, start, end = self.mix.draw(self.rng)
        try:
            response = await self.reader.get(self.reader.url(symbol, start, end), times=times)
        except httpx.HTTPError:
            return  # counted as failed by ``times``
        if response.status_code >= 400:
            times.failed += 1


def response_figures(
    requests: ResponseTimes, load: ApiLoad | None, freshness: Mapping[str, Mapping[str, float]]
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
