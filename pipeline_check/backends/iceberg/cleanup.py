"""The ``iceberg`` cleanup: delete canary rows from the pipeline's Iceberg table, one run's or every run's.

The tag range of the selection (:class:`~pipeline_check.backends.cleanup.Selection`) selects exactly the canaries:
a range on an integer tag column, or on text with ``tag_pattern``/``tag_regex`` the predicate of
:class:`~pipeline_check.backends.iceberg.tag_filter.TagFilter` (file statistics prune other files) and the exact
texts of the canaries it finds. :func:`plan` counts them per run (a filtered scan); :func:`delete` commits one
Iceberg delete with that filter (pyiceberg drops files holding only canaries in a ``delete`` snapshot and rewrites
the others without them in an ``overwrite`` one, both in the same commit, each marked with
``pipeline-check.cleanup``), retrying when a writer committed in between, and counts what is left. The Kafka topic
keeps its canaries until retention removes them; the API shows what the table holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pipeline_check.backends.cleanup import Deleted, Found, Selection
from pipeline_check.backends.iceberg.probe import IcebergSettings, open_table, tag_filter
from pipeline_check.backends.iceberg.tag_filter import TagFilter
from pipeline_check.canary.tags import MAX_RUN, SEQ_BITS, RunId
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.plugins import PluginSettings

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

COMMIT_ATTEMPTS = 5  # a writer committing between our read and our commit makes it fail; read again
CLEANUP_PROPERTY = "pipeline-check.cleanup"  # on the delete snapshot: what was deleted


class IcebergCleanup:
    """Deletes canary rows from the stage's table by tag range, with one delete commit."""

    Settings: ClassVar[type[PluginSettings]] = IcebergSettings
    system: ClassVar[str] = "Iceberg"

    def __init__(self, settings: IcebergSettings, where: str) -> None:
        self.settings = settings
        self.where = where
        self.table: Table | None = None  # opened by plan()

    def plan(self, selection: Selection) -> Found:
        self.table, found = plan(self.settings, self.where, selection)
        return found

    def delete(self, found: Found) -> Deleted:
        if self.table is None:
            raise RuntimeError("IcebergCleanup.delete before plan")
        return delete(self.table, self.settings, found, self.where)


def _canaries(table: Table, tags: TagFilter) -> tuple[np.ndarray[tuple[int], np.dtype[np.int64]], list[object]]:
    """The tags of the selection's canary rows, and the column's values that hold them."""
    scan = table.scan(row_filter=tags.expression(), selected_fields=(tags.column,))
    selected = tags.select(scan.to_arrow())
    if selected is None:
        return np.zeros(0, np.int64), []
    _, found, rows = selected
    return np.asarray(found, dtype=np.int64), [row[tags.column] for row in rows]


def _filter(table: Table, tags: TagFilter) -> BooleanExpression:
    """The delete filter: the tag range, or for text the exact texts of the canaries there now (a text range
    may hold texts that are not canaries)."""
    from pyiceberg.expressions import AlwaysFalse, And, In

    if not tags.text:
        return tags.expression()
    _, values = _canaries(table, tags)
    return And(tags.expression(), In(tags.column, values)) if values else AlwaysFalse()  # type: ignore[call-arg,arg-type]


def plan(settings: IcebergSettings, where: str, selection: Selection) -> tuple[Table, Found]:
    """The table and the canary rows ``selection`` holds there, per run (a read: nothing changes)."""
    table = open_table(settings, where)
    column = settings.tag_column
    if not any(f.name == column for f in table.schema().fields):
        raise ConfigError(
            f"{where}.tag_column", column, f"is missing in {settings.table}; cleanup selects canaries by tag",
            "name the column that holds the canary tag",
        )  # fmt: skip
    tags = tag_filter(settings, selection.lo, selection.hi, where)
    tags.check(table.schema(), settings.table)
    found, _ = _canaries(table, tags)
    runs, counts = np.unique((found >> SEQ_BITS) & MAX_RUN, return_counts=True)
    per_run = {RunId(int(r)): int(c) for r, c in zip(runs, counts, strict=True)}
    return table, Found(settings.table, selection, per_run)


def delete(table: Table, settings: IcebergSettings, plan: Found, where: str = "stages.iceberg") -> Deleted:
    """Commit the delete of ``plan``'s rows; a commit that lost a race with a writer is retried on fresh metadata."""
    from pyiceberg.exceptions import CommitFailedException

    tags = tag_filter(settings, plan.selection.lo, plan.selection.hi, where)
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            table.delete(
                delete_filter=_filter(table, tags), snapshot_properties={CLEANUP_PROPERTY: plan.selection.label}
            )
            break
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            table.refresh()
    snapshot = table.current_snapshot()
    operation = snapshot.summary.operation.value if snapshot is not None and snapshot.summary is not None else "none"
    left = len(_canaries(table, tags)[0])
    return Deleted(None if snapshot is None else snapshot.snapshot_id, operation, plan.rows, left)
