"""The Iceberg side of the consumer's late faults (faults.LateChanges): committed rows rewritten with a wrong
price, deleted, and appended again. Each change is one catalog commit carrying the table's current Kafka
offsets map, so a restart resumes where the writer was, as after any other commit.

  rewrite  an upsert (writes.upsert): one OVERWRITE snapshot replacing the files that hold the rows by the
           same files with those rows' new versions (same symbol and trade id, another price)
  delete   pyiceberg's row delete (Table.delete), copy-on-write: one OVERWRITE snapshot replacing the files
           that hold the rows by the same files without them, as Iceberg's copy-on-write DELETE FROM commits
           it (a DELETE snapshot only drops whole files, which a filter on scattered trade ids never selects)
  restore  the deleted rows appended again as they were first written (an APPEND snapshot)
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.table import Table

from .faults import LateChange, LateKind
from .iceberg import OFFSETS_PROPERTY, TRADES_ARROW_SCHEMA, dump_offsets, snapshot_offsets
from .trades import to_arrow
from .writes import key_filter, upsert


def apply_late(table: Table, change: LateChange) -> int:
    """Commit ``change``; returns the id of the snapshot it made."""
    rows: pa.Table = to_arrow(list(change.rows), TRADES_ARROW_SCHEMA)
    offsets, _ = snapshot_offsets(table)
    properties = {OFFSETS_PROPERTY: dump_offsets(offsets)}
    if change.kind is LateKind.REWRITE:
        upsert(table, rows, properties)
    elif change.kind is LateKind.DELETE:
        table.delete(key_filter(rows), snapshot_properties=properties)
    else:
        table.append(rows, snapshot_properties=properties)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
