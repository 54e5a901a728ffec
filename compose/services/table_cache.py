"""What the query API keeps between requests: the loaded table and each snapshot's planned data files.

Loading the table parses its whole metadata file, and planning a scan decodes every manifest of the
snapshot (deflate-compressed Avro): done per request, that was most of the API's CPU. Here:

- the table is reloaded only when the catalog points at a new metadata file: on a SQL catalog that is
  one indexed query per request (a new commit is still seen by the very next request); other catalogs
  are loaded per request as before;
- a snapshot's live data files are planned once, with the min/max statistics a query prunes by
  (symbol, trade_time); manifests never change once written, so a new snapshot decodes only the
  manifests it does not share with the previous one;
- a snapshot with delete files is left to pyiceberg's planner (which pairs deletes with data files).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFile, ManifestContent, ManifestFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import PrimitiveType
from sqlalchemy import select
from sqlalchemy.orm import Session

# plans kept, by snapshot id: requests that loaded the previous snapshot may still plan it after a commit
PLANS_KEPT = 4


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A live data file and the bounds a query prunes it by (None: no statistics, never pruned)."""

    task: FileScanTask
    symbol_low: str | None
    symbol_high: str | None
    time_low_us: int | None
    time_high_us: int | None

    def may_hold(self, symbol: str, start_us: int | None, end_us: int | None) -> bool:
        """Whether rows of ``symbol`` with start <= trade_time < end may be in the file (string bounds may be
        truncated, to a prefix below and an incremented prefix above: still bounds)."""
        if self.symbol_low is not None and symbol < self.symbol_low:
            return False
        if self.symbol_high is not None and symbol > self.symbol_high:
            return False
        if start_us is not None and self.time_high_us is not None and self.time_high_us < start_us:
            return False
        return not (end_us is not None and self.time_low_us is not None and self.time_low_us >= end_us)


@dataclass(frozen=True, slots=True)
class SnapshotPlan:
    """A snapshot's live data files; ``None`` files when it has delete files (pyiceberg plans those)."""

    snapshot_id: int
    files: tuple[PlannedFile, ...] | None

    def tasks(self, symbol: str, start_us: int | None, end_us: int | None) -> list[FileScanTask]:
        assert self.files is not None
        return [f.task for f in self.files if f.may_hold(symbol, start_us, end_us)]


class _Bounds:
    """Decodes a data file's lower/upper bounds of the two pruning columns."""

    def __init__(self, table: Table) -> None:
        schema = table.schema()
        symbol, trade_time = schema.find_field("symbol"), schema.find_field("trade_time")
        self.symbol: tuple[int, PrimitiveType] = (symbol.field_id, symbol.field_type)  # type: ignore[assignment]
        self.time: tuple[int, PrimitiveType] = (trade_time.field_id, trade_time.field_type)  # type: ignore[assignment]

    @staticmethod
    def _get(bounds: dict[int, bytes] | None, column: tuple[int, PrimitiveType]) -> object:
        raw = (bounds or {}).get(column[0])
        return None if raw is None else from_bytes(column[1], raw)

    def planned(self, data_file: DataFile) -> PlannedFile:
        lower, upper = data_file.lower_bounds, data_file.upper_bounds
        return PlannedFile(
            FileScanTask(data_file),
            self._get(lower, self.symbol),  # type: ignore[arg-type]
            self._get(upper, self.symbol),  # type: ignore[arg-type]
            self._get(lower, self.time),  # type: ignore[arg-type]
            self._get(upper, self.time),  # type: ignore[arg-type]
        )


def metadata_pointer(catalog: Catalog, identifier: str) -> Callable[[], str | None] | None:
    """A read of the table's current metadata location (one indexed query) on a SQL catalog; None for
    other catalogs. (pipeline-check's Iceberg probe reads the same pointer; the system under test does not
    import the validator.)"""
    if not isinstance(catalog, SqlCatalog):
        return None
    namespace, _, name = identifier.rpartition(".")
    statement = select(IcebergTables.metadata_location).where(
        IcebergTables.catalog_name == catalog.name,
        IcebergTables.table_namespace == namespace,
        IcebergTables.table_name == name,
    )

    def read() -> str | None:
        with Session(catalog.engine) as session:
            location: str | None = session.scalar(statement)
        return location

    return read


class TableCache:
    """The current table and the plan of its current snapshot, shared by the API's request threads."""

    def __init__(self, open_catalog: Callable[[], Catalog], identifier: str) -> None:
        self._open_catalog = open_catalog
        self._identifier = identifier
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._pointer: Callable[[], str | None] | None = None
        self._table: Table | None = None
        self._plans: dict[int, SnapshotPlan] = {}  # by snapshot id: the newest few (requests overlap commits)
        # manifest path -> its live data files, for the manifests of the last planned snapshot
        self._manifests: dict[str, list[PlannedFile]] = {}
        self.loads = 0  # full table loads (tests check the cache is used)
        self.manifest_reads = 0

    def table(self) -> Table:
        """The table as the catalog has it now (its current snapshot is the latest commit)."""
        with self._lock:
            try:
                return self._current()
            except Exception:
                # e.g. the catalog file was replaced: reopen next time
                self._catalog = self._pointer = self._table = None
                raise

    def _current(self) -> Table:
        if self._catalog is None:
            self._catalog = self._open_catalog()
            self._pointer = metadata_pointer(self._catalog, self._identifier)
        if self._table is not None and self._pointer is not None:
            if self._pointer() == self._table.metadata_location:
                return self._table
        self._table = self._catalog.load_table(self._identifier)
        self.loads += 1
        return self._table

    def plan(self, table: Table, snapshot: Snapshot) -> SnapshotPlan:
        """The live data files of ``snapshot`` (planned once per snapshot)."""
        with self._lock:
            plan = self._plans.get(snapshot.snapshot_id)
            if plan is not None:
                return plan
            manifests = snapshot.manifests(table.io)
            if any(m.content == ManifestContent.DELETES for m in manifests):
                plan = SnapshotPlan(snapshot.snapshot_id, None)
            else:
                bounds = _Bounds(table)
                self._manifests = {m.manifest_path: self._files(table, m, bounds) for m in manifests}
                plan = SnapshotPlan(snapshot.snapshot_id, tuple(f for fs in self._manifests.values() for f in fs))
            self._plans[snapshot.snapshot_id] = plan
            while len(self._plans) > PLANS_KEPT:
                del self._plans[next(iter(self._plans))]
            return plan

    def _files(self, table: Table, manifest: ManifestFile, bounds: _Bounds) -> list[PlannedFile]:
        known = self._manifests.get(manifest.manifest_path)
        if known is not None:
            return known
        self.manifest_reads += 1
        return [bounds.planned(e.data_file) for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)]
