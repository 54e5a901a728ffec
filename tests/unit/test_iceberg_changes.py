"""The change feed on real Iceberg tables (a pyiceberg SqlCatalog on SQLite in a temp folder): appends,
copy-on-write overwrites, deletes and upserts as pyiceberg writes them, and the kinds pyiceberg 0.12 does
not write (compaction's ``replace``, merge-on-read position and equality delete files), committed here
through its snapshot producer with delete files written by pyarrow."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.conversions import to_bytes
from pyiceberg.expressions import EqualTo, In
from pyiceberg.io import FileIO, InputFile, OutputFile
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriter,
    ManifestWriterV2,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import EMPTY_DICT, Record
from pyiceberg.types import LongType, NestedField, StringType

from pipeline_check.backends.iceberg.changes import (
    POSITION_PATH_ID,
    ChangeFeed,
    LiveRows,
    SnapshotChange,
    Transitions,
    UnsupportedChange,
)
from pipeline_check.backends.iceberg.metadata import MetadataReader
from pipeline_check.core.errors import ConfigError

SCHEMA = Schema(
    NestedField(1, "trade_id", LongType(), required=True),
    NestedField(2, "symbol", StringType(), required=False),
    NestedField(3, "qty", LongType(), required=False),
)
LO, HI = 1000, 1999  # this run's tags; 5 is a background trade, 2500 another run's canary
POSITION_POS_ID = 2147483545


def make_table(folder: Path, schema: Schema = SCHEMA, **options: Any) -> Table:
    (folder / "warehouse").mkdir()
    catalog = SqlCatalog("local", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}/warehouse")
    catalog.create_namespace("market")
    return catalog.create_table("market.trades", schema=schema, **options)


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return make_table(tmp_path)


def rows(*ids: int, qty: int = 1, symbol: str = "CANARYUSDT") -> pa.Table:
    n = len(ids)
    columns = {
        "trade_id": pa.array(ids, pa.int64()),
        "symbol": [symbol] * n,
        "qty": pa.array([qty] * n, pa.int64()),
    }
    return pa.table(columns, schema=SCHEMA.as_arrow())


def feed() -> ChangeFeed:
    return ChangeFeed("trade_id", LO, HI, ("symbol", "qty"))


def current(table: Table) -> int:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def deltas(changes: Iterable[SnapshotChange]) -> list[tuple[str, dict[int, int]]]:
    return [(c.operation, c.delta) for c in changes]


def live_in(table: Table) -> dict[int, int]:
    """The live canary rows by a plain full scan (the truth the feed must agree with)."""
    counts: dict[int, int] = {}
    for tag in table.scan().to_arrow()["trade_id"].to_pylist():
        if LO <= tag <= HI:
            counts[tag] = counts.get(tag, 0) + 1
    return counts


# -- committing what pyiceberg 0.12 does not write itself ----------------------------------------------


class _DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _Commit(_SnapshotProducer["_Commit"]):
    """One snapshot that adds and removes any files, delete files included, like Java's RowDelta and
    RewriteFiles: kept manifests are carried over, the touched ones rewritten without the removed files.
    ``sequence`` gives the added files that data sequence number (a rewrite from a starting snapshot)."""

    def __init__(
        self,
        tx: Transaction,
        operation: Operation,
        add: Sequence[DataFile],
        remove: Sequence[DataFile],
        sequence: int | None,
    ) -> None:
        super().__init__(operation, tx, tx._table.io)
        self._add, self._remove, self._sequence = list(add), {f.file_path for f in remove}, sequence
        for file in add:
            self.append_data_file(file)  # for the summary
        for file in remove:
            self.delete_data_file(file)

    def _validate_concurrency(self) -> None:
        """One writer in these tests."""

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        """The operation alone: pyiceberg 0.12 sums totals for append, overwrite and delete only (it raises
        on replace), and the feed reads nothing else from a summary."""
        return Summary(operation=self._operation)

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        return []

    def _writer(self, content: ManifestContent, spec_id: int) -> ManifestWriter:
        kind = ManifestWriterV2 if content == ManifestContent.DATA else _DeleteManifestWriter
        return kind(self.spec(spec_id), self.schema(), self.new_manifest_output(), self._snapshot_id, self._compression)

    def _manifests(self) -> list[ManifestFile]:
        manifests: list[ManifestFile] = []
        # (content, spec id) -> the files added and the entries removed there
        touched: dict[tuple[ManifestContent, int], tuple[list[DataFile], list[ManifestEntry]]] = defaultdict(
            lambda: ([], [])
        )
        for file in self._add:
            content = ManifestContent.DATA if file.content == DataFileContent.DATA else ManifestContent.DELETES
            touched[content, file.spec_id][0].append(file)
        parent = self._transaction.table_metadata.current_snapshot()
        for manifest in [] if parent is None else parent.manifests(self._io):
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            gone = [e for e in entries if e.data_file.file_path in self._remove]
            if not gone:
                manifests.append(manifest)
                continue
            touched[manifest.content, manifest.partition_spec_id][1].extend(gone)
            kept = [e for e in entries if e.data_file.file_path not in self._remove]
            if kept:
                with self._writer(manifest.content, manifest.partition_spec_id) as writer:
                    for entry in kept:
                        writer.existing(entry)
                manifests.append(writer.to_manifest_file())
        for (content, spec_id), (added, removed) in touched.items():
            with self._writer(content, spec_id) as writer:
                for file in added:
                    status = ManifestEntryStatus.ADDED
                    writer.add(ManifestEntry.from_args(status=status, sequence_number=self._sequence, data_file=file))
                for entry in removed:
                    writer.delete(entry)
            manifests.append(writer.to_manifest_file())
        return manifests


def commit(
    table: Table,
    operation: Operation,
    add: Sequence[DataFile] = (),
    remove: Sequence[DataFile] = (),
    sequence: int | None = None,
) -> int:
    with table.transaction() as tx:
        _Commit(tx, operation, add, remove, sequence).commit()
    return current(table)


def data_files(table: Table) -> list[DataFile]:
    """The live data files of the current state."""
    snapshot = table.current_snapshot()
    assert snapshot is not None
    files = [e.data_file for m in snapshot.manifests(table.io) for e in m.fetch_manifest_entry(table.io)]
    return [f for f in files if f.content == DataFileContent.DATA]


def write_data(table: Table, frame: pa.Table) -> DataFile:
    """A data file as pyiceberg writes one (field ids, statistics), not committed."""
    (file,) = _dataframe_to_data_files(table.metadata, frame, table.io)
    file.spec_id = table.metadata.default_spec_id  # from_args leaves it unset
    return file


def _parquet(table: Table, frame: pa.Table, ids: Sequence[int]) -> tuple[str, int]:
    schema = pa.schema(
        [f.with_metadata({b"PARQUET:field_id": str(i).encode()}) for f, i in zip(frame.schema, ids, strict=True)]
    )
    path = f"{table.location()}/data/delete-{uuid.uuid4()}.parquet"
    with table.io.new_output(path).create() as out:
        pq.write_table(frame.cast(schema), out)
    return path, len(table.io.new_input(path))


def position_deletes(table: Table, *pairs: tuple[str, int]) -> DataFile:
    """A v2 position delete file (file_path, pos), with the path bounds a writer records."""
    paths = [p for p, _ in pairs]
    frame = pa.table(
        {"file_path": pa.array(paths, pa.string()), "pos": pa.array([pos for _, pos in pairs], pa.int64())},
        schema=pa.schema([pa.field("file_path", pa.string(), False), pa.field("pos", pa.int64(), False)]),
    )
    path, size = _parquet(table, frame, (POSITION_PATH_ID, POSITION_POS_ID))
    file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=len(pairs),
        file_size_in_bytes=size,
        lower_bounds={POSITION_PATH_ID: min(paths).encode()},
        upper_bounds={POSITION_PATH_ID: max(paths).encode()},
    )
    file.spec_id = 0  # from_args leaves it unset
    return file


def equality_deletes(
    table: Table, *keys: Any, on: Sequence[str] = ("trade_id",), partition: Record | None = None
) -> DataFile:
    """A v2 equality delete file on ``on`` (trade_id alone by default), with min/max statistics."""
    values = [k if isinstance(k, tuple) else (k,) for k in keys]
    fields = [SCHEMA.find_field(name) for name in on]
    frame = pa.table(
        {f.name: [v[i] for v in values] for i, f in enumerate(fields)}, schema=SCHEMA.select(*on).as_arrow()
    )
    path, size = _parquet(table, frame, [f.field_id for f in fields])
    tags = [v[on.index("trade_id")] for v in values] if "trade_id" in on else []
    file = DataFile.from_args(
        content=DataFileContent.EQUALITY_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record() if partition is None else partition,
        record_count=len(values),
        file_size_in_bytes=size,
        lower_bounds={1: to_bytes(LongType(), min(tags))} if tags else {},
        upper_bounds={1: to_bytes(LongType(), max(tags))} if tags else {},
        equality_ids=[f.field_id for f in fields],
    )
    file.spec_id = 0  # from_args leaves it unset
    return file


class CountingIO(FileIO):
    """The table's FileIO, noting every file opened for reading."""

    def __init__(self, inner: FileIO) -> None:
        super().__init__(inner.properties)
        self.inner = inner
        self.opened: list[str] = []

    def new_input(self, location: str) -> InputFile:
        self.opened.append(location)
        return self.inner.new_input(location)

    def new_output(self, location: str) -> OutputFile:
        return self.inner.new_output(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        self.inner.delete(location)


def counted(table: Table) -> tuple[Table, CountingIO]:
    io = CountingIO(table.io)
    return Table(table.name(), table.metadata, table.metadata_location, io, table.catalog), io


# -- what pyiceberg writes -----------------------------------------------------------------------------


def test_appends_give_each_snapshots_own_rows_and_time(table: Table) -> None:
    f = feed()
    table.append(rows(1000, 1001, 5))
    first = table.current_snapshot()
    assert first is not None
    table.append(rows(1002, 2500, qty=3))
    changes = f.poll(table)
    assert deltas(changes) == [("append", {1000: 1, 1001: 1}), ("append", {1002: 1})]
    assert (changes[0].snapshot_id, changes[0].timestamp_ms) == (first.snapshot_id, first.timestamp_ms)
    assert changes[1].rows == {1002: {"trade_id": 1002, "symbol": "CANARYUSDT", "qty": 3}}
    assert f.snapshot_id == current(table)
    assert f.poll(table) == []  # nothing new


def test_merged_manifests_carry_old_files_without_adding_them_again(tmp_path: Path) -> None:
    merging = {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"}  # as the consumer
    table = make_table(tmp_path, properties=merging)
    f = feed()
    for tag in (1000, 1001, 1002):
        table.append(rows(tag))
        assert deltas(f.poll(table)) == [("append", {tag: 1})]
    snapshot = table.current_snapshot()
    assert snapshot is not None and len(snapshot.manifests(table.io)) == 1  # one merged manifest holds all three


def test_overwrite_with_a_filter_rewrites_the_file_and_nets_the_rows_it_keeps(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    f = feed()
    f.poll(table)
    table.overwrite(rows(1000, qty=2), overwrite_filter=EqualTo("trade_id", 1000))
    changes = f.poll(table)
    # copy-on-write: the old file goes, a rewrite keeps 1001 (same snapshot: nets to 0), then the new row
    assert deltas(changes) == [("overwrite", {1000: -1}), ("append", {1000: 1})]
    assert changes[0].rows[1001]["qty"] == 1  # carried over by the rewrite, still live
    assert changes[1].rows[1000]["qty"] == 2  # the new value, for the field diff


def test_overwrite_without_a_filter_replaces_everything(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    f = feed()
    f.poll(table)
    table.overwrite(rows(1001, 1004, qty=9))
    assert deltas(f.poll(table)) == [("delete", {1000: -1, 1001: -1}), ("append", {1001: 1, 1004: 1})]


def test_deletes_of_whole_files_and_of_some_rows(table: Table) -> None:
    table.append(rows(1000))
    table.append(rows(1001, 1002, 2500))
    f = feed()
    f.poll(table)
    table.delete(EqualTo("trade_id", 1000))  # all of its file (by statistics): dropped whole
    table.delete(In("trade_id", [1002, 2500]))  # some of that file: the rest is rewritten
    assert deltas(f.poll(table)) == [("delete", {1000: -1}), ("overwrite", {1002: -1})]


def test_upsert_updates_in_place_and_inserts(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    f, live = feed(), LiveRows()
    for change in f.poll(table):
        live.apply(change)
    table.upsert(rows(1001, 1003, qty=7), join_cols=["trade_id"])
    changes = f.poll(table)
    transitions = [live.apply(change) for change in changes]
    assert sum(c.delta.get(1001, 0) for c in changes) == 0  # deleted and re-added: still one row
    assert sum(c.delta.get(1003, 0) for c in changes) == 1
    assert live.counts == {1000: 1, 1001: 1, 1003: 1} == live_in(table)
    assert not any(t.duplicated for t in transitions)
    assert [c.rows[1001]["qty"] for c in changes if 1001 in c.rows] == [7]


def test_a_commit_that_duplicates_a_row_is_seen_as_two_live_rows(table: Table) -> None:
    f, live = feed(), LiveRows()
    table.append(rows(1000))
    table.append(rows(1000))  # a writer that replayed a batch
    transitions = [live.apply(change) for change in f.poll(table)]
    assert transitions == [Transitions((1000,), (), ()), Transitions((), (1000,), ())]
    assert live.counts == {1000: 2}


# -- what pyiceberg does not write: committed through its snapshot producer ----------------------------


def test_compaction_replace_nets_to_zero(table: Table) -> None:
    table.append(rows(1000, 5))
    table.append(rows(1001, 2500))
    old = data_files(table)
    f = feed()
    f.poll(table)
    merged = write_data(table, rows(1000, 5, 1001, 2500))
    commit(table, Operation.REPLACE, add=[merged], remove=old)
    (change,) = f.poll(table)
    assert (change.operation, change.delta) == ("replace", {})
    assert set(change.rows) == {1000, 1001}  # the rows now live in the new file
    table.delete(EqualTo("trade_id", 1001))  # the feed knows where the rows live now
    assert deltas(f.poll(table)) == [("overwrite", {1001: -1})]


def test_position_deletes(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    (file,) = data_files(table)
    f = feed()
    f.poll(table)
    first = position_deletes(table, (file.file_path, 1))
    commit(table, Operation.DELETE, add=[first])
    assert deltas(f.poll(table)) == [("delete", {1001: -1})]
    again = position_deletes(table, (file.file_path, 1), (file.file_path, 2))  # 1001 again, and a background row
    commit(table, Operation.DELETE, add=[again])
    assert deltas(f.poll(table)) == [("delete", {})]  # a row already deleted is not deleted twice
    merged = position_deletes(table, (file.file_path, 1), (file.file_path, 2))  # delete files compacted
    commit(table, Operation.REPLACE, add=[merged], remove=[first, again])
    assert deltas(f.poll(table)) == [("replace", {})]
    commit(table, Operation.OVERWRITE, remove=[merged])  # the delete undone: the row is back
    assert deltas(f.poll(table)) == [("overwrite", {1001: 1})]
    assert live_in(table) == {1000: 1, 1001: 1}


def test_positions_count_across_row_groups(tmp_path: Path) -> None:
    table = make_table(tmp_path, properties={"write.parquet.row-group-limit": "2"})
    table.append(rows(5, 1000, 6, 1001, 1002))  # row groups [5, 1000] [6, 1001] [1002]
    (file,) = data_files(table)
    assert pq.ParquetFile(file.file_path.removeprefix("file://")).num_row_groups == 3
    f = feed()
    f.poll(table)
    commit(table, Operation.DELETE, add=[position_deletes(table, (file.file_path, 3))])
    assert deltas(f.poll(table)) == [("delete", {1001: -1})]


def test_position_deletes_of_rows_added_by_the_same_snapshot(table: Table) -> None:
    f = feed()
    added = write_data(table, rows(1002, 1003, 1003))  # an upsert within one streaming checkpoint
    commit(table, Operation.OVERWRITE, add=[added, position_deletes(table, (added.file_path, 1))])
    (change,) = f.poll(table)
    assert change.delta == {1002: 1, 1003: 1}
    assert live_in(table) == {1002: 1, 1003: 1}


def test_position_deletes_and_compaction_that_applies_them(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    (file,) = data_files(table)
    deletes = position_deletes(table, (file.file_path, 0))
    commit(table, Operation.DELETE, add=[deletes])
    f = feed()
    assert f.poll(table)[-1].delta == {1000: -1}
    compacted = write_data(table, rows(1001, 5))
    commit(table, Operation.REPLACE, add=[compacted], remove=[file, deletes])
    assert deltas(f.poll(table)) == [("replace", {})]


def test_a_position_delete_older_than_the_file_it_names_does_not_apply(table: Table) -> None:
    later = write_data(table, rows(1000))
    commit(table, Operation.DELETE, add=[position_deletes(table, (later.file_path, 0))])  # sequence 1
    commit(table, Operation.APPEND, add=[later])  # sequence 2: deletes apply up to their own sequence
    assert deltas(feed().poll(table)) == [("delete", {}), ("append", {1000: 1})]
    f = feed()
    assert f.seek(table, table.current_snapshot()).delta == {1000: 1}  # type: ignore[arg-type]
    assert live_in(table) == {1000: 1}


def test_position_deletes_of_other_files_are_not_read(table: Table) -> None:
    table.append(rows(5, 6))  # background only: not a canary file
    (background,) = data_files(table)
    table.append(rows(1000))
    f = feed()
    f.poll(table)
    commit(table, Operation.DELETE, add=[position_deletes(table, (background.file_path, 0))])
    watched, io = counted(table)
    assert deltas(f.poll(watched)) == [("delete", {})]
    assert not [p for p in io.opened if "/data/delete-" in p]  # its path bounds miss the canary file


def test_equality_deletes_upsert_merge_on_read(table: Table) -> None:
    table.append(rows(1000, 1001, 5))
    f, live = feed(), LiveRows()
    for change in f.poll(table):
        live.apply(change)
    for qty in (2, 3):  # the same key upserted twice: the second delete must not count the first row again
        commit(table, Operation.OVERWRITE, add=[equality_deletes(table, 1000), write_data(table, rows(1000, qty=qty))])
        (change,) = f.poll(table)
        assert change.delta == {}
        assert change.rows[1000]["qty"] == qty
        live.apply(change)
    commit(table, Operation.DELETE, add=[equality_deletes(table, 1000, 2500)])
    (change,) = f.poll(table)
    assert change.delta == {1000: -1}
    assert live.apply(change) == Transitions((), (), (1000,))
    assert live.counts == {1001: 1}


def test_equality_deletes_apply_to_a_rewrite_that_kept_an_older_sequence_number(table: Table) -> None:
    table.append(rows(1000, 1001))  # sequence 1
    (file,) = data_files(table)
    f = feed()
    f.poll(table)
    commit(table, Operation.DELETE, add=[equality_deletes(table, 1000)])  # sequence 2, while a compaction runs
    assert f.poll(table)[0].delta == {1000: -1}
    # the compaction started at sequence 1 and commits its rewrite at that data sequence number, so the
    # newer equality delete still applies to the rewritten 1000
    commit(table, Operation.REPLACE, add=[write_data(table, rows(1000, 1001))], remove=[file], sequence=1)
    assert deltas(f.poll(table)) == [("replace", {})]


def test_equality_deletes_apply_within_their_partition(tmp_path: Path) -> None:
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="symbol"))
    table = make_table(tmp_path, partition_spec=spec)
    table.append(pa.concat_tables([rows(1000, symbol="A"), rows(1000, symbol="B")]))
    f = feed()
    assert f.poll(table)[0].delta == {1000: 2}
    commit(table, Operation.DELETE, add=[equality_deletes(table, 1000, partition=Record("A"))])
    assert deltas(f.poll(table)) == [("delete", {1000: -1})]  # the row in partition B stays


def test_an_unpartitioned_equality_delete_applies_to_every_partition(table: Table) -> None:
    table.append(rows(1000))  # spec 0: unpartitioned
    with table.update_spec() as update:
        update.add_identity("symbol")
    table.append(rows(1001))  # spec 1: by symbol
    f = feed()
    f.poll(table)
    commit(table, Operation.DELETE, add=[equality_deletes(table, 1000, 1001)])  # spec 0: a global delete
    assert deltas(f.poll(table)) == [("delete", {1000: -1, 1001: -1})]


def test_equality_deletes_on_several_columns(table: Table) -> None:
    table.append(rows(1000, 1001))
    f = feed()
    f.poll(table)
    keys = ((1000, "OTHER"), (1001, "CANARYUSDT"))
    commit(table, Operation.DELETE, add=[equality_deletes(table, *keys, on=("trade_id", "symbol"))])
    assert deltas(f.poll(table)) == [("delete", {1001: -1})]


def test_equality_deletes_of_other_runs_are_not_read(table: Table) -> None:
    table.append(rows(1000))
    f = feed()
    f.poll(table)
    commit(table, Operation.DELETE, add=[equality_deletes(table, 2500, 2600)])
    watched, io = counted(table)
    assert deltas(f.poll(watched)) == [("delete", {})]
    assert not [p for p in io.opened if "/data/delete-" in p]  # pruned by the tag statistics


def test_equality_deletes_without_the_tag_column_are_refused(table: Table) -> None:
    table.append(rows(1000))
    f = feed()
    f.poll(table)
    before = f.snapshot_id
    commit(table, Operation.DELETE, add=[equality_deletes(table, "CANARYUSDT", on=("symbol",))])
    with pytest.raises(UnsupportedChange, match=r"equality deletes on \['symbol'\].*include 'trade_id'"):
        f.poll(table)
    assert f.snapshot_id == before  # nothing applied


def test_a_tag_column_that_is_not_an_integer_is_named(table: Table) -> None:
    table.append(rows(1000))
    with pytest.raises(ConfigError, match=r"stages.iceberg.tag_column='symbol' \(str\): is a string column of"):
        ChangeFeed("symbol", LO, HI).poll(table)


# -- history that is gone, cost, failures --------------------------------------------------------------


def test_expired_snapshots_fall_back_to_a_rescan(table: Table) -> None:
    table.append(rows(1000, 1001))
    f, live = feed(), LiveRows()
    for change in f.poll(table):
        live.apply(change)
    table.delete(EqualTo("trade_id", 1000))
    gone = current(table)
    table.append(rows(1002))
    kept = current(table)
    table.append(rows(1003))
    first = table.snapshots()[0].snapshot_id
    table.maintenance.expire_snapshots().by_ids([first, gone]).commit()
    changes = f.poll(table)
    # the oldest snapshot left is read in full and compared with what the feed held; the rest is followed
    assert [(c.snapshot_id, c.rescanned, c.delta) for c in changes] == [
        (kept, True, {1000: -1, 1002: 1}),
        (current(table), False, {1003: 1}),
    ]
    for change in changes:
        live.apply(change)
    assert live.counts == live_in(table) == {1001: 1, 1002: 1, 1003: 1}


def test_a_rollback_rescans_the_snapshot_rolled_back_to(table: Table) -> None:
    table.append(rows(1000))
    target = current(table)
    table.append(rows(1001))
    f = feed()
    f.poll(table)
    table.manage_snapshots().rollback_to_snapshot(target).commit()
    (change,) = f.poll(table)
    assert (change.snapshot_id, change.rescanned, change.delta) == (target, True, {1001: -1})


def snapshot_changes(
    table: Table, after: int | None, tag_column: str, lo: int, hi: int, columns: tuple[str, ...]
) -> list[SnapshotChange]:
    """Changes of the snapshots committed after snapshot ``after`` (exclusive; None = from the table's first
    snapshot), oldest first, as a fresh :class:`ChangeFeed` sought to ``after`` reads them in one poll. When
    ``after`` is no longer in the metadata the changes count from an empty table (a rescan)."""
    feed = ChangeFeed(tag_column, lo, hi, columns)
    snapshot = None if after is None else table.snapshot_by_id(after)
    if snapshot is not None:
        feed.seek(table, snapshot)
    return feed.poll(table)


def test_snapshot_changes_from_a_snapshot_and_from_an_expired_one(table: Table) -> None:
    table.append(rows(1000))
    after = current(table)
    table.append(rows(1001, 2500))
    args = ("trade_id", LO, HI, ("symbol",))
    assert deltas(snapshot_changes(table, after, *args)) == [("append", {1001: 1})]
    assert deltas(snapshot_changes(table, None, *args)) == [("append", {1000: 1}), ("append", {1001: 1})]
    table.maintenance.expire_snapshots().by_id(after).commit()
    (change,) = snapshot_changes(table, after, *args)  # nothing to diff against: every live row is new
    assert (change.rescanned, change.delta) == (True, {1000: 1, 1001: 1})


def test_a_poll_reads_only_what_the_new_snapshot_wrote(table: Table) -> None:
    def opened_by_one_poll(history: int) -> list[str]:
        for i in range(history):
            table.append(rows(10 * i + 1))
        f = feed()
        f.seek(table, table.current_snapshot())  # type: ignore[arg-type]
        table.append(rows(1000 + history, 20_000 + history))  # a canary and a background row
        watched, io = counted(table)
        (change,) = f.poll(watched)
        assert change.delta == {1000 + history: 1}
        return [Path(p).suffix for p in io.opened]

    few, many = opened_by_one_poll(2), opened_by_one_poll(30)
    assert few == many == [".avro", ".avro", ".parquet"]  # manifest list, its new manifest, the new file


def test_data_files_of_other_runs_are_not_opened(table: Table) -> None:
    f = feed()
    table.append(rows(2500, 2600))  # another run's canaries: min/max miss this run's range
    watched, io = counted(table)
    assert deltas(f.poll(watched)) == [("append", {})]
    assert [Path(p).suffix for p in io.opened] == [".avro", ".avro"]  # manifest list and manifest only


def test_a_table_read_through_the_metadata_reader_is_followed(table: Table) -> None:
    table.append(rows(1000))
    f = feed()
    f.poll(table)
    reader = MetadataReader(s.snapshot_id for s in table.snapshots())
    table.append(rows(1001))
    table.delete(EqualTo("trade_id", 1000))
    loaded, new = reader.load(table, table.metadata_location)
    assert len(loaded.snapshots()) == 2 == len(new)  # only the new ones were validated
    assert deltas(f.poll(loaded)) == [("append", {1001: 1}), ("delete", {1000: -1})]


def test_a_snapshot_that_cannot_be_read_is_tried_again(table: Table) -> None:
    table.append(rows(1000))
    f = feed()
    f.poll(table)
    table.append(rows(1001))
    readable = current(table)
    old = {file.file_path for file in data_files(table)}
    table.append(rows(1002))
    (new_file,) = [file for file in data_files(table) if file.file_path not in old]
    path = Path(new_file.file_path.removeprefix("file://"))
    away = path.rename(path.with_suffix(".away"))  # a file not readable yet
    assert deltas(f.poll(table)) == [("append", {1001: 1})]  # what could be read is not held back
    assert f.snapshot_id == readable
    with pytest.raises(FileNotFoundError):
        f.poll(table)
    assert f.snapshot_id == readable  # nothing of the failed snapshot applied
    away.rename(path)
    assert deltas(f.poll(table)) == [("append", {1002: 1})]


# -- live counts ---------------------------------------------------------------------------------------


def delta_of(delta: dict[int, int]) -> SnapshotChange:
    return SnapshotChange(1, 0, "overwrite", delta, {})


def test_live_rows_transitions() -> None:
    live = LiveRows()
    assert live.apply(delta_of({1: 1, 2: 2})) == Transitions((1, 2), (2,), ())
    assert live.apply(delta_of({1: 1, 2: -2})) == Transitions((), (1,), (2,))
    assert live.apply(delta_of({1: -1})) == Transitions((), (), ())  # 2 -> 1: still live, no longer doubled
    assert live.counts == {1: 1}
    with pytest.raises(ValueError, match="tag 1: 1 live rows -2 in snapshot 1"):
        live.apply(delta_of({1: -2}))
