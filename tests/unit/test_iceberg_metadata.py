"""The Iceberg metadata reader: only new snapshots validated, and never a wrong answer when the writer
reformats or expires snapshots (a real pyiceberg SqlCatalog in a temp folder, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField

from pipeline_check.backends.iceberg.metadata import MetadataReader, metadata_pointer, without_snapshot_log

SCHEMA = Schema(NestedField(1, "trade_id", LongType(), required=True))


@pytest.fixture
def table(tmp_path: Path) -> Table:
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog("local", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.create_namespace("market")
    return catalog.create_table("market.trades", schema=SCHEMA)


def append(table: Table, *ids: int) -> int:
    table.append(pa.table({"trade_id": pa.array(ids, pa.int64())}, schema=SCHEMA.as_arrow()))
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def text(table: Table) -> str:
    return Path(table.metadata_location.removeprefix("file://")).read_text()


def test_only_new_snapshots_are_kept(table: Table) -> None:
    first = [append(table, i) for i in range(3)]
    reader = MetadataReader(first)
    metadata, new = reader.parse(text(table))
    assert new == set()
    assert [s.snapshot_id for s in metadata.snapshots] == [first[-1]]  # the current one only
    later = [append(table, 10), append(table, 11)]
    metadata, new = reader.parse(text(table))
    assert new == set(later)
    assert [s.snapshot_id for s in metadata.snapshots] == later
    assert metadata.current_snapshot_id == later[-1]
    assert metadata.snapshot_by_id(later[-1]).parent_snapshot_id == later[0]  # type: ignore[union-attr]


def test_unhandled_snapshots_are_returned_again(table: Table) -> None:
    reader = MetadataReader()
    one = append(table, 1)
    _, new = reader.parse(text(table))
    assert new == {one}
    two = append(table, 2)
    _, new = reader.parse(text(table))  # the caller never marked `one` handled (its poll failed)
    assert new == {one, two}


def test_reformatted_and_expired_metadata_reads_right(table: Table) -> None:
    ids = [append(table, i) for i in range(4)]
    reader = MetadataReader(ids[:2])
    reader.parse(text(table))
    reader.handled |= set(ids)
    data = json.loads(text(table))
    data["snapshots"] = [s for s in data["snapshots"] if s["snapshot-id"] != ids[1]]  # expired
    data["snapshots"][0]["summary"]["note"] = "rewritten"
    pretty = json.dumps(data, indent=2)
    metadata, new = reader.parse(pretty)
    assert new == set()
    assert [s.snapshot_id for s in metadata.snapshots] == [ids[-1]]
    data["snapshots"].append({**data["snapshots"][-1], "snapshot-id": 42, "parent-snapshot-id": ids[-1]})
    data["current-snapshot-id"] = 42
    data["refs"]["main"]["snapshot-id"] = 42
    data["last-sequence-number"] += 1
    data["snapshots"][-1]["sequence-number"] = data["last-sequence-number"]
    metadata, new = reader.parse(json.dumps(data, separators=(",", ":")))
    assert new == {42}
    assert metadata.current_snapshot_id == 42


def test_pointer_follows_commits(table: Table) -> None:
    pointer = metadata_pointer(table)
    assert pointer is not None
    before = pointer()
    append(table, 1)
    assert pointer() != before
    assert pointer() == table.metadata_location


def test_load_gives_a_scannable_table(table: Table) -> None:
    append(table, 1)
    reader = MetadataReader(s.snapshot_id for s in table.snapshots())
    new_id = append(table, 2, 3)
    loaded, new = reader.load(table, table.metadata_location)
    assert new == {new_id}
    previous = loaded.metadata.snapshot_by_id(new_id).parent_snapshot_id  # type: ignore[union-attr]
    scan = loaded.incremental_append_scan(from_snapshot_id_exclusive=previous, to_snapshot_id_inclusive=new_id)
    assert sorted(scan.to_arrow()["trade_id"].to_pylist()) == [2, 3]


def test_the_snapshot_log_is_cut_before_decoding_and_nothing_else(table: Table) -> None:
    ids = [append(table, i) for i in range(4)]
    raw = text(table).encode()
    full = json.loads(raw)
    assert full["snapshot-log"]  # the writer logs every snapshot
    cut = json.loads(without_snapshot_log(raw))
    assert cut["snapshot-log"] == []
    assert {k: v for k, v in full.items() if k != "snapshot-log"} == {
        k: v for k, v in cut.items() if k != "snapshot-log"
    }
    metadata, new = MetadataReader(ids[:2]).parse(raw)
    assert new == set(ids[2:]) and metadata.current_snapshot_id == ids[-1]
