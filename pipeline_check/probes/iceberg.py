"""The ``iceberg`` probe: rows become visible when a snapshot that holds them is committed.

At start it notes the table's current snapshot (the baseline). Each poll refreshes the table and walks
only the snapshots committed since the last poll; for each, an incremental append scan filtered on the
run's tag range reads just the files that snapshot added (file statistics skip the rest), so the cost
follows new data, not the table's history. Each canary keeps the snapshot id and the snapshot's own
timestamp (the writer's clock) beside the probe's time.

A full refresh would parse every snapshot the table ever kept; on a SQL catalog the probe reads the
metadata pointer first and validates only the snapshots it has not handled (``iceberg_metadata``), so
the cost of a poll stays flat as history grows. Other catalogs get a plain ``refresh()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from pipeline_check.clock import Clock
from pipeline_check.config import IcebergStage, PipelineConfig
from pipeline_check.errors import EndpointError
from pipeline_check.events import NoteBuffer
from pipeline_check.probes.base import PROBES
from pipeline_check.probes.iceberg_metadata import MetadataReader, metadata_pointer
from pipeline_check.probes.resolution import LookTimes
from pipeline_check.trace import TraceBook

FAILURES_TOLERATED = 5  # consecutive failed polls (a locked catalog, a file mid-write) before giving up


@dataclass(frozen=True, slots=True)
class NewSnapshot:
    snapshot_id: int
    timestamp_ms: int
    rows: list[dict[str, Any]]


@PROBES.register("iceberg")
class IcebergProbe(NoteBuffer):
    stage: ClassVar[str] = "iceberg"

    def __init__(self, config: PipelineConfig, clock: Clock, book: TraceBook) -> None:
        super().__init__()
        assert config.stages.iceberg is not None
        self.settings: IcebergStage = config.stages.iceberg
        self.clock = clock
        self.book = book
        column = self.settings.tag_column
        self._filter: BooleanExpression = And(
            GreaterThanOrEqual(column, book.run.lo),  # type: ignore[call-arg,arg-type]
            LessThanOrEqual(column, book.run.hi),  # type: ignore[call-arg,arg-type]
        )
        self._columns = tuple(dict.fromkeys((column, *self.settings.fields)))
        self._table: Table | None = None
        self.baseline: int | None = None
        self._last: int | None = None
        self._pointer: Callable[[], str | None] | None = None  # the metadata location, where cheap to read
        self._reader = MetadataReader()
        self._looks = LookTimes()
        self.poll_seconds: list[float] = []  # wall time of each poll's refresh + scans (benchmarks read it)

    async def start(self) -> None:
        table = await asyncio.to_thread(self._load)
        self._pointer = metadata_pointer(table)
        self._reader = MetadataReader(snapshot.snapshot_id for snapshot in table.snapshots())
        if self._pointer is not None:  # read the file once, so the first poll skips what it holds
            table, _ = await asyncio.to_thread(self._reader.load, table, table.metadata_location)
        self._table = table
        current = table.current_snapshot()
        self.baseline = self._last = None if current is None else current.snapshot_id

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                seen_at, snapshots = await asyncio.to_thread(self.poll)
                failures = 0
            except Exception as exc:  # transient (a locked catalog, a file mid-write) until it repeats
                failures += 1
                if failures >= FAILURES_TOLERATED:
                    raise EndpointError(
                        "stages.iceberg.table", self.settings.table,
                        f"{failures} polls in a row failed ({type(exc).__name__}: {exc})",
                        "is the catalog reachable and the warehouse readable?",
                    ) from exc  # fmt: skip
                snapshots, seen_at = [], self.clock.now()
            self._record(seen_at, snapshots)
            await asyncio.sleep(self.settings.poll_interval)

    async def finish(self) -> None:
        """A last look, so rows committed just before the stop are counted (late duplicates)."""
        if self._table is not None:
            self._record(*await asyncio.to_thread(self.poll))

    @property
    def resolution(self) -> float:
        return self._looks.median

    def poll(self) -> tuple[float, list[NewSnapshot]]:
        """Refresh, then scan each snapshot committed since the last poll (runs on a worker thread)."""
        assert self._table is not None
        began = self.clock.now()
        table, new = self._refreshed()
        seen_at = self.clock.now()
        self._looks.look(seen_at)
        current = table.current_snapshot()
        if current is None or current.snapshot_id == self._last:
            self._table = table
            self._reader.handled |= new
            self.poll_seconds.append(self.clock.now() - began)
            return seen_at, []
        chain = []
        snapshot: Snapshot | None = current
        while snapshot is not None and snapshot.snapshot_id != self._last:
            chain.append(snapshot)
            parent = snapshot.parent_snapshot_id
            snapshot = None if parent is None else table.snapshot_by_id(parent)
        found = []
        previous = self._last
        for snapshot in reversed(chain):
            scan = table.incremental_append_scan(
                from_snapshot_id_exclusive=previous,
                to_snapshot_id_inclusive=snapshot.snapshot_id,
                row_filter=self._filter,
                selected_fields=self._columns,
            )
            found.append(NewSnapshot(snapshot.snapshot_id, snapshot.timestamp_ms, scan.to_arrow().to_pylist()))
            previous = snapshot.snapshot_id
        self._last = current.snapshot_id
        self._table = table
        self._reader.handled |= new
        self.poll_seconds.append(self.clock.now() - began)
        return seen_at, found

    def _refreshed(self) -> tuple[Table, set[int]]:
        """The table as it is now, and the ids of snapshots validated for it that are new."""
        assert self._table is not None
        table = self._table
        if self._pointer is None:
            table.refresh()
            return table, set()
        location = self._pointer()
        if location is None or location == table.metadata_location:
            return table, set()
        return self._reader.load(table, location)

    def _record(self, seen_at: float, snapshots: list[NewSnapshot]) -> None:
        book, column, fields = self.book, self.settings.tag_column, self.settings.fields
        for snapshot in snapshots:
            for row in snapshot.rows:
                seq = book.seq_of(row[column])
                if seq is None:
                    continue
                first = book.seen("iceberg", seq, seen_at, source_ms=snapshot.timestamp_ms, ref=snapshot.snapshot_id)
                if first and fields:
                    book.diff("iceberg", seq, row, fields)

    def _load(self) -> Table:
        settings = self.settings
        uri = settings.redacted_catalog().get("uri", settings.catalog_name)
        try:
            catalog = load_catalog(settings.catalog_name, **settings.catalog)
        except Exception as exc:  # pyiceberg raises many kinds here; all mean "this catalog cannot be used"
            raise EndpointError(
                "stages.iceberg.catalog", uri, f"cannot open the catalog ({type(exc).__name__}: {exc})",
                "check the catalog properties (type, uri, warehouse)",
            ) from None  # fmt: skip
        try:
            return catalog.load_table(settings.table)
        except NoSuchTableError:
            raise EndpointError(
                "stages.iceberg.table", settings.table, f"no such table in catalog {uri}",
                "has the pipeline created it yet? is the name right?",
            ) from None  # fmt: skip
