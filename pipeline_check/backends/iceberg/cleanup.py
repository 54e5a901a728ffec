"""The ``iceberg`` cleanup: delete canary rows from the pipeline's Iceberg table, one run's or every run's.

A range filter on the tag column selects exactly the canaries
(:class:`~pipeline_check.backends.cleanup.Selection`). :func:`plan` counts them per run (a filtered scan:
file statistics skip every other file); :func:`delete` commits one Iceberg delete with that filter (pyiceberg
drops files holding only canaries in a ``delete`` snapshot and rewrites the others without them in an
``overwrite`` one, both in the same commit, each marked with ``pipeline-check.cleanup``), retrying when a
writer committed in between, and counts what is left. The Kafka topic keeps its canaries until retention
removes them; the API shows what the table holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pipeline_check.backends.cleanup import Deleted, Found, Selection
from pipeline_check.backends.iceberg.probe import IcebergSettings, open_table
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
        return delete(self.table, self.settings.tag_column, found)


def _filter(column: str, selection: Selection) -> BooleanExpression:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    return And(GreaterThanOrEqual(column, selection.lo), LessThanOrEqual(column, selection.hi))  # type: ignore[call-arg,arg-type]


def _tags(table: Table, column: str, selection: Selection) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    scan = table.scan(row_filter=_filter(column, selection), selected_fields=(column,))
    return np.asarray(scan.to_arrow().column(column).to_numpy(zero_copy_only=False), dtype=np.int64)


def plan(settings: IcebergSettings, where: str, selection: Selection) -> tuple[Table, Found]:
    """The table and the canary rows ``selection`` holds there, per run (a read: nothing changes)."""
    from pyiceberg.types import IntegerType, LongType

    table = open_table(settings, where)
    column = settings.tag_column
    field = next((f for f in table.schema().fields if f.name == column), None)
    if field is None or not isinstance(field.field_type, LongType | IntegerType):
        kind = "missing" if field is None else str(field.field_type)
        raise ConfigError(
            f"{where}.tag_column", column, f"is {kind} in {settings.table}; cleanup selects canaries by tag range",
            "name the integer column that holds the canary tag",
        )  # fmt: skip
    runs, counts = np.unique((_tags(table, column, selection) >> SEQ_BITS) & MAX_RUN, return_counts=True)
    per_run = {RunId(int(r)): int(c) for r, c in zip(runs, counts, strict=True)}
    return table, Found(settings.table, selection, per_run)


def delete(table: Table, column: str, plan: Found) -> Deleted:
    """Commit the delete of ``plan``'s rows; a commit that lost a race with a writer is retried on fresh metadata."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(COMMIT_ATTEMPTS):
        try:
            table.delete(
                delete_filter=_filter(column, plan.selection),
                snapshot_properties={CLEANUP_PROPERTY: plan.selection.label},
            )
            break
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            table.refresh()
    snapshot = table.current_snapshot()
    operation = snapshot.summary.operation.value if snapshot is not None and snapshot.summary is not None else "none"
    left = len(_tags(table, column, plan.selection))
    return Deleted(None if snapshot is None else snapshot.snapshot_id, operation, plan.rows, left)
