"""The ``iceberg`` sampler: the age of the table's latest commit, and of the newest event time in it.

The newest event time is the largest upper bound of the event-time column (``passive.event_time``,
default ``event_time``) in the data files' statistics: taken over every live file once at the start,
then over the files each new snapshot adds. Rows deleted later do not lower it. Snapshot times are the
writer's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from pyiceberg.table import Table

from pipeline_check.backends.iceberg.metadata import MetadataReader, metadata_pointer
from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.backends.iceberg.tables import TimeColumn, open_table
from pipeline_check.backends.sampler import Reading, SamplerContext, age
from pipeline_check.core.plugins import PluginSettings

DEFAULT_EVENT_TIME = "event_time"


class IcebergSampler:
    Settings: ClassVar[type[PluginSettings]] = IcebergSettings
    provides: ClassVar[tuple[str, ...]] = ("freshness", "snapshot_age")

    def __init__(self, settings: IcebergSettings, ctx: SamplerContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._table: Table | None = None
        self._column: TimeColumn | None = None
        self._pointer: Callable[[], str | None] | None = None
        self._reader = MetadataReader()
        self._newest: float | None = None  # epoch ms

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        table = open_table(self.settings, self.ctx.stage)
        name = self.ctx.event_time or DEFAULT_EVENT_TIME
        self._column = TimeColumn(table, name, f"passive.event_time.{self.ctx.stage}")
        self._pointer = metadata_pointer(table)
        current = table.current_snapshot()
        self._reader = MetadataReader(s.snapshot_id for s in table.snapshots())
        if current is not None:
            self._newest = self._column.newest_in_state(table, current)
        self._table = table

    async def sample(self) -> Reading:
        return await asyncio.to_thread(self._sample)

    def _sample(self) -> Reading:
        if self._table is None or self._column is None:
            raise RuntimeError("IcebergSampler used before start")
        table = self._refreshed(self._table)
        self._table = table
        current = table.current_snapshot()
        if current is None:
            return Reading(detail="the table has no snapshot")
        now_ms = self.ctx.clock.wall(self.ctx.clock.now()) * 1000
        commit_age, commit_ahead = age(now_ms, current.timestamp_ms)
        values = {"snapshot_age": commit_age}
        ahead = commit_ahead
        if self._newest is not None:
            values["freshness"], data_ahead = age(now_ms, self._newest)
            ahead = max(ahead, data_ahead)
        detail = f"snapshot {current.snapshot_id}; newest {self._column.name} by file statistics"
        return Reading(values, current.snapshot_id, ahead_s=ahead, detail=detail)

    def _refreshed(self, table: Table) -> Table:
        """The table as it is now; the newest event time raised by what new snapshots added."""
        if self._pointer is None:
            table.refresh()
            new = {s.snapshot_id for s in table.snapshots()} - self._reader.handled
        else:
            location = self._pointer()
            if location is None or location == table.metadata_location:
                return table
            table, new = self._reader.load(table, location)
        column = self._column
        for snapshot in table.snapshots():
            if snapshot.snapshot_id in new and column is not None:
                added = column.newest_added(table, snapshot)
                if added is not None:
                    self._newest = added if self._newest is None else max(self._newest, added)
        self._reader.handled |= new
        return table

    async def close(self) -> None:
        self._table = None
