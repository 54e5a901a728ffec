"""The API load: workers asking the API what its users would, for the run's duration (see
:mod:`pipeline_check.backends.load`).

Each worker asks one request at a time and waits ``PAUSE`` after each answer (a dashboard refreshing).
Before the load starts the mix is asked one request at a time (``IDLE_REQUESTS`` of them). Requests are
bounded in number and time; the workers stop with the run.
"""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar

import httpx

from pipeline_check.backends.api.probe import ApiSettings
from pipeline_check.backends.api.reader import ALL_TAGS, ApiReader
from pipeline_check.backends.load import QueryMix
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.response_times import ResponseTimes

IDLE_REQUESTS = 20  # enough for an idle p95
PAUSE = 0.25  # seconds between an answer and the worker's next request
MAX_REQUESTS = 100_000  # over all workers


class ApiLoad:
    """Concurrent bounded queries against the API; ``idle`` and ``loaded`` hold their response times."""

    Settings: ClassVar[type[PluginSettings]] = ApiSettings

    def __init__(
        self,
        settings: ApiSettings,
        stage: str,
        concurrency: int,
        mix: QueryMix,
        *,
        seed: int = 0,
        tags: tuple[int, int] | None = None,
    ) -> None:
        self.reader = ApiReader(settings, stage, ResponseTimes(), tags=tags or ALL_TAGS)
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
