"""What each new snapshot of an Iceberg table changed for the run's canaries (provisional: appends only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot


@dataclass(frozen=True, slots=True)
class SnapshotChange:
    snapshot_id: int
    timestamp_ms: int
    operation: str
    delta: dict[int, int]
    rows: dict[int, dict[str, Any]]


@dataclass(slots=True)
class LiveRows:
    counts: dict[int, int] = field(default_factory=dict)

    def apply(self, delta: Mapping[int, int]) -> dict[int, int]:
        changed = {}
        for tag, change in delta.items():
            live = self.counts.get(tag, 0) + change
            self.counts[tag] = live
            changed[tag] = live
        return changed


def snapshot_changes(
    table: Table, after: int | None, tag_column: str, lo: int, hi: int, columns: tuple[str, ...]
) -> list[SnapshotChange]:
    chain: list[Snapshot] = []
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id != after:
        chain.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = None if parent is None else table.snapshot_by_id(parent)
    row_filter = And(GreaterThanOrEqual(tag_column, lo), LessThanOrEqual(tag_column, hi))  # type: ignore[call-arg,arg-type]
    changes = []
    previous = after
    for snapshot in reversed(chain):
        scan = table.incremental_append_scan(
            from_snapshot_id_exclusive=previous,
            to_snapshot_id_inclusive=snapshot.snapshot_id,
            row_filter=row_filter,
            selected_fields=columns,
        )
        rows = scan.to_arrow().to_pylist()
        delta = Counter(int(r[tag_column]) for r in rows)
        first = {int(r[tag_column]): r for r in reversed(rows)}
        operation = snapshot.summary.operation.value if snapshot.summary is not None else "append"
        changes.append(SnapshotChange(snapshot.snapshot_id, snapshot.timestamp_ms, operation, dict(delta), first))
        previous = snapshot.snapshot_id
    return changes
