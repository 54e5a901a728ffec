"""The ``api`` sampler: the age of the newest record the API returns.

For each symbol (``passive.symbols``) it asks for a recent window reaching a day ahead (records in the
future show clock skew), widened (10 s, 5 min, 1 h, 1 day) until one holds records; a full answer in
ascending order is paged forward. The record's time is ``passive.event_time`` of the
stage, or its ``time_field`` (any time form: :mod:`pipeline_check.canary.time_forms`).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pipeline_check.backends.api.probe import ApiSettings
from pipeline_check.backends.api.reader import AHEAD_MS, ApiReader
from pipeline_check.backends.sampler import Reading, SamplerContext, age
from pipeline_check.canary.time_forms import read_time, zone
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.jsonpath import compile_path
from pipeline_check.core.plugins import PluginSettings

MAX_PAGES = 20


class ApiSampler:
    Settings: ClassVar[type[PluginSettings]] = ApiSettings
    provides: ClassVar[tuple[str, ...]] = ("freshness",)

    def __init__(self, settings: ApiSettings, ctx: SamplerContext) -> None:
        self.settings = settings
        self.ctx = ctx
        field = ctx.event_time or settings.time_field
        if not field:
            raise ConfigError(
                f"passive.event_time.{ctx.stage}", None, "the API stage has no time_field to read record times from",
                f"set passive.event_time.{ctx.stage} or stages.{ctx.stage}.time_field",
            )  # fmt: skip
        self.field = field
        self._time = compile_path(f"passive.event_time.{ctx.stage}", field)
        self._reader = ApiReader(settings, ctx.stage, ctx.responses)
        self._zone = zone(settings.time_zone)

    async def start(self) -> None:
        await self._reader.check_health()

    async def sample(self) -> Reading:
        now_ms = int(self.ctx.clock.wall(self.ctx.clock.now()) * 1000)
        found = await asyncio.gather(*(self._newest(symbol, now_ms) for symbol in self.ctx.symbols))
        newest = [t for t in found if t is not None]
        symbols = ", ".join(self.ctx.symbols)
        if not newest:
            return Reading(detail=f"no record of {symbols} within a day")
        seconds, ahead = age(now_ms, max(newest))
        return Reading({"freshness": seconds}, max(newest), ahead_s=ahead, detail=f"newest {self.field} of {symbols}")

    async def close(self) -> None:
        await self._reader.close()

    async def _newest(self, symbol: str, now_ms: int) -> int | None:
        start, records = await self._reader.recent(symbol, now_ms)
        newest = None
        for _ in range(MAX_PAGES):
            read = (read_time(t, self._zone) if t is not None else None for t in map(self._time, records))
            times = [int(instant.ms) for instant in read if instant is not None]
            if not times:
                break
            newest = max(times) if newest is None else max(newest, *times)
            if len(records) < self.settings.limit or times[0] >= times[-1]:
                break  # the whole window, or newest first: the newest record is in hand
            start = max(times)  # a full answer, oldest first: the newest is on a later page
            records = await self._reader.records(symbol, start, now_ms + AHEAD_MS)
        return newest
