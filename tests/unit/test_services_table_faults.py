"""The consumer's late faults in the table (compose/services/table_faults.py), on a real pyiceberg SQL catalog in a
temp folder: committed rows rewritten with a wrong price, deleted, and appended again, each commit carrying the
writer's Kafka offsets map."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.table import Table
from services.faults import ConsumerFaults, LateChange, LateChanges, LateKind
from services.iceberg import OFFSETS_PROPERTY, TRADES_ARROW_SCHEMA, snapshot_offsets
from services.table_faults import apply_late
from services.trades import Row, Trade, to_arrow

from tests.unit.test_services_writes import TOPIC, new_table

T0 = 1_700_000_000_000


def batch(ids: range, symbol: str = "BTCUSDT") -> list[Row]:
    return [
        Row(Trade(symbol, i, Decimal("100.5"), Decimal("1"), "buy", T0 + i, T0 + i), T0, TOPIC, i % 3, 500 + i)
        for i in ids
    ]


@pytest.fixture
def table(tmp_path: Path) -> Table:
    """A table holding trades 0-99 in one file, committed with a Kafka offsets map."""
    table = new_table(tmp_path)
    offsets = json.dumps({f"{TOPIC}:0": 700, f"{TOPIC}:1": 701})
    table.append(to_arrow(batch(range(100)), TRADES_ARROW_SCHEMA), snapshot_properties={OFFSETS_PROPERTY: offsets})
    return table


def live(table: Table) -> dict[int, dict[str, Any]]:
    return {r["trade_id"]: r for r in table.scan().to_arrow().to_pylist()}


def test_a_rewrite_replaces_the_rows_in_place_by_an_overwrite(table: Table) -> None:
    before = live(table)
    offsets = snapshot_offsets(table)[0]
    late = LateChanges(ConsumerFaults(rewrite_fraction=0.2))
    late.committed(batch(range(100)), now=0.0)
    (change,) = late.due(2.0)
    rewritten = {r.trade.trade_id for r in change.rows}
    assert 5 <= len(rewritten) <= 40
    snapshot_id = apply_late(table, change)
    snapshot = table.snapshot_by_id(snapshot_id)
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.operation.value == "overwrite"
    assert snapshot_offsets(table) == (offsets, snapshot_id)  # a restart resumes where the writer was
    after = live(table)
    assert sorted(after) == sorted(before)  # no row lost or added: the same trade ids, once each
    assert table.scan().to_arrow().num_rows == 100
    for trade_id, row in after.items():
        if trade_id in rewritten:
            assert row["price"] == before[trade_id]["price"] + 1
            assert {k: v for k, v in row.items() if k != "price"} == {
                k: v for k, v in before[trade_id].items() if k != "price"
            }
        else:
            assert row == before[trade_id]


def test_a_delete_removes_the_rows_and_a_restore_brings_them_back_unchanged(table: Table) -> None:
    before = live(table)
    offsets = snapshot_offsets(table)[0]
    doomed = tuple(batch(range(10, 20)))
    deleted_in = apply_late(table, LateChange(LateKind.DELETE, doomed))
    deleted = table.snapshot_by_id(deleted_in)
    assert deleted is not None and deleted.summary is not None
    # copy-on-write: the file holding them is replaced by one without them
    assert deleted.summary.operation.value == "overwrite"
    assert (deleted.summary["deleted-records"], deleted.summary["added-records"]) == ("100", "90")
    assert sorted(live(table)) == sorted(set(before) - set(range(10, 20)))
    assert snapshot_offsets(table) == (offsets, deleted_in)
    restored_in = apply_late(table, LateChange(LateKind.RESTORE, doomed))
    restored = table.snapshot_by_id(restored_in)
    assert restored is not None and restored.summary is not None
    assert restored.summary.operation.value == "append"
    assert live(table) == before
    assert table.scan().to_arrow().num_rows == 100
    assert snapshot_offsets(table) == (offsets, restored_in)
