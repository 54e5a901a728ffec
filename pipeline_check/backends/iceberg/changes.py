"""Follow canary rows through an Iceberg table's snapshots of every kind, reading only what each new
snapshot adds or removes.

An append scan sees only rows that ``append`` snapshots add. Writers also commit ``overwrite`` (MERGE,
UPDATE and DELETE by copy-on-write, upserts), ``delete``, ``replace`` (compaction) and merge-on-read delete
files. :class:`ChangeFeed` keeps every canary row (tag in ``[lo, hi]``) of the table state it is at, by
where it lives (data file, position) and which delete files hide it. For each snapshot committed since,
on the current branch, it reads the manifests that snapshot wrote and applies their entries:

- a data file added: its rows in the tag range become rows (a file whose tag min/max statistics miss the
  range is never opened); equality deletes already in the table that cover it hide their matches;
- a data file removed (copy-on-write overwrite, delete, replace): its rows go; nothing is read, the feed
  already holds them;
- a position delete file added: the rows it points at, in data files that hold canary rows, are hidden
  (data files with a sequence number up to the delete's, as the spec says);
- an equality delete file added: rows with equal keys in data files of a lower sequence number, in the
  same partition (or anywhere for an unpartitioned delete), are hidden. Supported when the equality
  columns include the tag column (so other runs' delete files are pruned by statistics) and are all among
  the columns read; anything else is refused with :class:`UnsupportedChange`, never miscounted;
- a delete file removed: rows only it hid are live again (a rewritten delete file hides them again).

A snapshot's delta is each tag's live rows after it minus before it: a compaction nets to zero, a key
deleted and re-added in one snapshot nets to its live count, a rewritten delete file nets to nothing.

Cost of a poll: per new snapshot its manifest list, the manifests it wrote and the files it added that may
hold the range. None of it grows with the number of snapshots in the history (the manifest list grows
with the manifests of the current state; manifest merging keeps that short).

When the parents of the current snapshot do not lead back to the feed's snapshot (snapshots expired
between polls, a rollback, a branch reset), the feed rebuilds its state with a full filtered read of the
oldest new snapshot it can read and reports the difference to what it held as one change marked
``rescanned``; the snapshots after it are followed one by one. The rescanned change folds in whatever the
missing snapshots did: a canary added and removed inside them is never seen, and rows they added carry
the rescanned snapshot's time, not the time they were committed.

Not supported (an :class:`UnsupportedChange`): delete files that are not Parquet (v3 deletion vectors
in Puffin files among them), the equality deletes named above.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestEntry, ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.typedef import Record

from pipeline_check.backends.iceberg.tag_filter import TagFilter
from pipeline_check.core.errors import PipelineCheckError

POSITION_PATH_ID = 2147483546  # the spec's reserved field id of a position delete file's file_path


@dataclass(frozen=True, slots=True)
class SnapshotChange:
    """What one snapshot did to the live canary rows of the table."""

    snapshot_id: int
    timestamp_ms: int  # the snapshot's own time (the writer's clock)
    operation: str  # append | overwrite | replace | delete (from the summary)
    delta: dict[int, int]  # tag -> live rows added minus removed by this snapshot (0 entries omitted)
    # tag -> one live row of a data file this snapshot added (a rescan: of the state read), selected columns:
    # every version of a canary row the table shows passes through here (an overwrite's rewritten rows too)
    rows: dict[int, dict[str, Any]]
    rescanned: bool = False  # the delta compares a full read of this state with the feed's last one


class UnsupportedChange(PipelineCheckError):
    """A snapshot holds a change the feed cannot count; it refuses rather than guess."""

    def __init__(self, table: str, snapshot_id: int, problem: str, fix: str) -> None:
        super().__init__(f"stages.iceberg.table={table!r} (table): snapshot {snapshot_id} {problem}; {fix}")


@dataclass(frozen=True, slots=True)
class Transitions:
    """Tags whose live row count crossed a line with one change."""

    live: tuple[int, ...]  # 0 -> at least 1
    duplicated: tuple[int, ...]  # at most 1 -> more than 1 in one table state
    retracted: tuple[int, ...]  # at least 1 -> 0


@dataclass(slots=True)
class LiveRows:
    """Live rows per canary tag, as the changes of successive snapshots leave them."""

    counts: dict[int, int] = field(default_factory=dict)

    def apply(self, change: SnapshotChange) -> Transitions:
        live: list[int] = []
        duplicated: list[int] = []
        retracted: list[int] = []
        for tag, step in change.delta.items():
            before = self.counts.get(tag, 0)
            after = before + step
            if after < 0:
                raise ValueError(f"tag {tag}: {before} live rows {step:+d} in snapshot {change.snapshot_id}")
            if after:
                self.counts[tag] = after
            else:
                del self.counts[tag]
            if before == 0 < after:
                live.append(tag)
            if before <= 1 < after:
                duplicated.append(tag)
            if before > 0 == after:
                retracted.append(tag)
        return Transitions(tuple(live), tuple(duplicated), tuple(retracted))


@dataclass(slots=True)
class _Row:
    tag: int
    values: dict[str, Any]
    hidden_by: set[str] = field(default_factory=set)  # delete files that delete it


@dataclass(slots=True)
class _DataFile:
    sequence: int
    spec_id: int
    partition: Record
    rows: dict[int, _Row]  # position in the file -> canary row


@dataclass(frozen=True, slots=True)
class _EqualityDelete:
    sequence: int
    spec_id: int
    partition: Record
    unpartitioned: bool  # applies to every partition
    names: tuple[str, ...]
    keys: frozenset[tuple[Any, ...]]  # only keys whose tag is in the range

    def covers(self, data: _DataFile) -> bool:
        same_partition = data.spec_id == self.spec_id and data.partition == self.partition
        return data.sequence < self.sequence and (self.unpartitioned or same_partition)

    def matches(self, row: _Row) -> bool:
        return tuple(row.values[name] for name in self.names) in self.keys


@dataclass(slots=True)
class _Reads:
    """Everything one snapshot changes, read before any of it is applied: a failed read changes nothing."""

    removed: list[str] = field(default_factory=list)  # data and delete files
    data: dict[str, _DataFile] = field(default_factory=dict)  # only files that hold canary rows
    # delete file -> its sequence number and the (data file, position) pairs it deletes
    positions: dict[str, tuple[int, list[tuple[str, int]]]] = field(default_factory=dict)
    equality: dict[str, _EqualityDelete] = field(default_factory=dict)


class ChangeFeed:
    """The canary rows of one table, carried from snapshot to snapshot (see the module docstring).

    Starts before the table's first snapshot; :meth:`seek` jumps to a snapshot by reading its state. ``tags``
    finds the canary rows (default: the tag itself in an integer ``tag_column``)."""

    def __init__(
        self, tag_column: str, lo: int, hi: int, columns: Sequence[str] = (), *, tags: TagFilter | None = None
    ) -> None:
        self.tag_column = tag_column
        self.tags = tags or TagFilter(tag_column, lo, hi)
        self.columns = tuple(dict.fromkeys((tag_column, *columns)))
        self.snapshot_id: int | None = None  # the state the feed holds
        self._sequence = 0  # that snapshot's sequence number (0 on v1 tables and before any snapshot)
        self._files: dict[str, _DataFile] = {}  # only data files that hold canary rows
        self._equality: dict[str, _EqualityDelete] = {}
        self._hides: dict[str, list[tuple[str, int]]] = {}  # delete file -> (data file, position) it hides
        self._steps: dict[int, int] = {}  # tag -> live rows gained by the snapshot being applied

    def poll(self, table: Table) -> list[SnapshotChange]:
        """Changes of the snapshots on the current branch committed since the feed's snapshot, oldest
        first; the feed is then at the current snapshot (a table without one has nothing to report).

        Each snapshot is applied whole or not at all. When one cannot be read (a file not there yet), the
        changes before it are returned and it is tried again by the next poll, which raises if it still
        cannot be read."""
        current = table.current_snapshot()
        if current is None or current.snapshot_id == self.snapshot_id:
            return []
        chain: list[Snapshot] = []  # newest first
        snapshot: Snapshot | None = current
        while snapshot is not None and not 0 < (snapshot.sequence_number or 0) <= self._sequence:
            chain.append(snapshot)
            parent = snapshot.parent_snapshot_id
            if parent is not None and parent == self.snapshot_id:
                return self._follow_all(table, chain, [])
            snapshot = None if parent is None else table.snapshot_by_id(parent)
        # not reached from the feed's snapshot: read the oldest state there is in full (a rollback's
        # target, else the oldest snapshot whose parent is gone; a snapshot without a parent may be the
        # table's first or one whose parent expired: pyiceberg's expiry clears the parent id), then follow
        base = snapshot if snapshot is not None else chain.pop()
        return self._follow_all(table, chain, [self.seek(table, base)])

    def seek(self, table: Table, snapshot: Snapshot) -> SnapshotChange:
        """Rebuild the state at ``snapshot`` with a full filtered read of it (every manifest of that
        state; data files pruned by statistics); the change is the difference to the state held, marked
        ``rescanned`` unless it is exactly the snapshot's own (the table's first, seen from empty)."""
        io = table.io
        entries = [e for m in snapshot.manifests(io) for e in m.fetch_manifest_entry(io, discard_deleted=True)]
        reads = self._read(table, snapshot, entries, known=set())
        own = self.snapshot_id is None and all(e.snapshot_id == snapshot.snapshot_id for e in entries)
        before: dict[int, int] = {}
        for data in self._files.values():
            for row in data.rows.values():
                if not row.hidden_by:
                    before[row.tag] = before.get(row.tag, 0) - 1
        self._files.clear()
        self._equality.clear()
        self._hides.clear()
        return self._apply(snapshot, reads, before, rescanned=not own)

    def _follow_all(self, table: Table, chain: list[Snapshot], changes: list[SnapshotChange]) -> list[SnapshotChange]:
        """``changes`` and those of ``chain`` (newest first), up to the first that cannot be read."""
        for snapshot in reversed(chain):
            try:
                changes.append(self._follow(table, snapshot))
            except Exception:
                if not changes:
                    raise
                break  # return what was applied; the next poll starts at this snapshot and raises again
        return changes

    def _follow(self, table: Table, snapshot: Snapshot) -> SnapshotChange:
        """The change of one snapshot whose parent is the feed's state: only the files it wrote."""
        io, sid = table.io, snapshot.snapshot_id
        entries = [
            entry
            for manifest in snapshot.manifests(io)
            if manifest.added_snapshot_id == sid
            and not (manifest.added_files_count == 0 and manifest.deleted_files_count == 0)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False)
            if entry.snapshot_id == sid  # a merged manifest carries older files over as EXISTING entries
        ]
        reads = self._read(table, snapshot, [e for e in entries if e.status == ManifestEntryStatus.ADDED], self._files)
        reads.removed = [e.data_file.file_path for e in entries if e.status == ManifestEntryStatus.DELETED]
        return self._apply(snapshot, reads, {}, rescanned=False)

    # -- reading (no state changes) --------------------------------------------------------------------

    def _read(self, table: Table, snapshot: Snapshot, added: list[ManifestEntry], known: Iterable[str]) -> _Reads:
        reads = _Reads()
        by_content: dict[DataFileContent, list[ManifestEntry]] = {}
        for entry in added:
            by_content.setdefault(entry.data_file.content, []).append(entry)
        for entry in by_content.get(DataFileContent.DATA, []):
            data = self._read_data(table, entry)
            if data is not None:
                reads.data[entry.data_file.file_path] = data
        deletes = [
            *by_content.get(DataFileContent.POSITION_DELETES, []),
            *by_content.get(DataFileContent.EQUALITY_DELETES, []),
        ]
        for entry in deletes:
            if entry.data_file.file_format != FileFormat.PARQUET:
                raise UnsupportedChange(
                    ".".join(table.name()), snapshot.snapshot_id,
                    f"adds a {entry.data_file.file_format.value} delete file ({entry.data_file.file_path})",
                    "only Parquet position and equality delete files are read",
                )  # fmt: skip
        candidates = {*known, *reads.data}
        for entry in by_content.get(DataFileContent.POSITION_DELETES, []):
            if candidates:  # no canary rows anywhere: nothing to delete
                pairs = self._read_positions(table, entry, candidates)
                reads.positions[entry.data_file.file_path] = (_sequence(entry), pairs)
        for entry in by_content.get(DataFileContent.EQUALITY_DELETES, []):
            equality = self._read_equality(table, snapshot, entry)
            if equality is not None:
                reads.equality[entry.data_file.file_path] = equality
        return reads

    def _read_data(self, table: Table, entry: ManifestEntry) -> _DataFile | None:
        """The canary rows of an added data file, None when it holds none."""
        file = entry.data_file
        if not self.tags.may_hold(table, file):
            return None
        rows = self.tags.select(self._scan(table, file, self.columns))
        if rows is None:
            return None
        canaries = {pos: _Row(tag, row) for pos, tag, row in zip(*rows, strict=True)}
        return _DataFile(_sequence(entry), file.spec_id, file.partition, canaries)

    def _read_positions(self, table: Table, entry: ManifestEntry, paths: set[str]) -> list[tuple[str, int]]:
        """The (data file, position) pairs a position delete file deletes among ``paths``."""
        file = entry.data_file
        lower = (file.lower_bounds or {}).get(POSITION_PATH_ID)
        upper = (file.upper_bounds or {}).get(POSITION_PATH_ID)
        # truncated bounds still bracket every path in the file (lower is a prefix, upper rounded up)
        wanted = [p for p in paths if (lower is None or lower <= p.encode()) and (upper is None or p.encode() <= upper)]
        if not wanted:
            return []
        with table.io.new_input(file.file_path).open() as stream:
            deletes = pq.read_table(stream, columns=["file_path", "pos"], filters=pc.field("file_path").isin(wanted))
        return list(zip(deletes["file_path"].to_pylist(), deletes["pos"].to_pylist(), strict=True))

    def _read_equality(self, table: Table, snapshot: Snapshot, entry: ManifestEntry) -> _EqualityDelete | None:
        """An equality delete file's keys whose tag is in the range, None when it holds none."""
        file = entry.data_file
        schema = table.metadata.schema()
        names = tuple(schema.find_column_name(field_id) or f"field {field_id}" for field_id in file.equality_ids or ())
        if self.tag_column not in names or not set(names) <= set(self.columns):
            raise UnsupportedChange(
                ".".join(table.name()), snapshot.snapshot_id,
                f"adds equality deletes on {list(names)} ({file.file_path})",
                f"equality deletes are counted when their columns include {self.tag_column!r} and are all among "
                f"the columns read {list(self.columns)}",
            )  # fmt: skip
        if not self.tags.may_hold(table, file):
            return None
        rows = self.tags.select(self._scan(table, file, names))
        if rows is None:
            return None
        keys = frozenset(tuple(row[name] for name in names) for row in rows[2])
        unpartitioned = table.metadata.specs()[file.spec_id].is_unpartitioned()
        return _EqualityDelete(_sequence(entry), file.spec_id, file.partition, unpartitioned, names, keys)

    @staticmethod
    def _scan(table: Table, file: DataFile, names: tuple[str, ...]) -> pa.Table:
        """Every row of one file in file order (row i is position i), projected on ``names`` by field id."""
        scan = ArrowScan(table.metadata, table.io, table.metadata.schema().select(*names), AlwaysTrue())
        return scan.to_table([FileScanTask(file)])

    # -- applying (no reads) ---------------------------------------------------------------------------

    def _apply(self, snapshot: Snapshot, reads: _Reads, steps: dict[int, int], *, rescanned: bool) -> SnapshotChange:
        """Apply what was read; ``steps`` starts the tags' live row changes (a rescan: minus what was held)."""
        self._steps = steps
        added: list[_Row] = []
        for path in reads.removed:  # a removed data file's rows go; a removed delete file's rows come back
            self._unhide(path)
            self._drop(path)
        for path, data in reads.data.items():
            self._files[path] = data
            for row in data.rows.values():
                self._count(row.tag, 1)
                added.append(row)
            for delete_path, equality in self._equality.items():  # a rewrite that kept an old sequence number
                self._hide_equal(delete_path, equality, path, data)
        for delete_path, (sequence, pairs) in reads.positions.items():
            for path, pos in pairs:
                target = self._files.get(path)
                hit = None if target is None or target.sequence > sequence else target.rows.get(pos)
                if hit is not None:
                    self._hide(delete_path, path, pos, hit)
        for delete_path, equality in reads.equality.items():
            self._equality[delete_path] = equality
            for path, data in self._files.items():
                self._hide_equal(delete_path, equality, path, data)
        rows: dict[int, dict[str, Any]] = {}
        for row in added:
            if not row.hidden_by:
                rows.setdefault(row.tag, row.values)
        self.snapshot_id, self._sequence = snapshot.snapshot_id, snapshot.sequence_number or 0
        summary = snapshot.summary
        return SnapshotChange(
            snapshot_id=snapshot.snapshot_id,
            timestamp_ms=snapshot.timestamp_ms,
            operation="unknown" if summary is None else summary.operation.value,
            delta={tag: step for tag, step in self._steps.items() if step},
            rows=rows,
            rescanned=rescanned,
        )

    def _count(self, tag: int, step: int) -> None:
        self._steps[tag] = self._steps.get(tag, 0) + step

    def _hide_equal(self, delete_path: str, equality: _EqualityDelete, path: str, data: _DataFile) -> None:
        if equality.covers(data):
            for pos, row in data.rows.items():
                if equality.matches(row):
                    self._hide(delete_path, path, pos, row)

    def _hide(self, delete_path: str, path: str, pos: int, row: _Row) -> None:
        if delete_path in row.hidden_by:
            return
        if not row.hidden_by:
            self._count(row.tag, -1)
        row.hidden_by.add(delete_path)
        self._hides.setdefault(delete_path, []).append((path, pos))

    def _unhide(self, delete_path: str) -> None:
        self._equality.pop(delete_path, None)
        for path, pos in self._hides.pop(delete_path, ()):
            data = self._files.get(path)  # gone when its data file was removed first
            row = None if data is None else data.rows[pos]
            if row is not None and delete_path in row.hidden_by:
                row.hidden_by.discard(delete_path)
                if not row.hidden_by:
                    self._count(row.tag, 1)

    def _drop(self, path: str) -> None:
        data = self._files.pop(path, None)
        for row in () if data is None else data.rows.values():
            if not row.hidden_by:
                self._count(row.tag, -1)


def _sequence(entry: ManifestEntry) -> int:
    """An entry's data sequence number (inherited from its manifest when the entry leaves it out)."""
    return entry.sequence_number or 0
