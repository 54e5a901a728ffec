"""Delete canary rows from the pipeline's Iceberg table: one run's, or every run's.

Canary tags of one run form one range (``tags``: ``2**62 | run << 26 | seq``), every canary's tag is at or
above ``2**62``, real trade ids are far below it, so a range filter on the tag column selects exactly the
canaries. :func:`plan` counts them per run (a filtered scan: file statistics skip every other file);
:func:`delete` commits one Iceberg delete with that filter (pyiceberg drops files holding only canaries in a
``delete`` snapshot and rewrites the others without them in an ``overwrite`` one, both in the same commit, each
marked with ``pipeline-check.cleanup``), retrying when a writer committed in between, and counts what is left. The Kafka
topic keeps its canaries until retention removes them; the API shows what the table holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline_check.canary.tags import CANARY_BIT, MAX_RUN, SEQ_BITS, RunId
from pipeline_check.core.errors import ConfigError

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from pipeline_check.backends.iceberg.probe import IcebergSettings
    from pipeline_check.config import PipelineConfig

COMMIT_ATTEMPTS = 5  # a writer committing between our read and our commit makes it fail; read again
CLEANUP_PROPERTY = "pipeline-check.cleanup"  # on the delete snapshot: what was deleted
_RUN = re.compile(r"^run-([0-9a-f]{1,10})$")


@dataclass(frozen=True, slots=True)
class Selection:
    """The tag range to delete: ``[lo, hi]``."""

    lo: int
    hi: int
    label: str  # "run-1a2b3c4d" or "every canary"

    @classmethod
    def of_run(cls, text: str) -> Selection:
        """The range of the run a report names (``run-1a2b3c4d``)."""
        match = _RUN.match(text.strip().lower())
        value = int(match.group(1), 16) if match else -1
        if not 0 <= value <= MAX_RUN:
            raise ConfigError("--run", text, "is not a run id", "give one as reports show it, e.g. run-167ad57ab")
        run = RunId(value)
        return cls(run.lo, run.hi, str(run))

    @classmethod
    def every_canary(cls) -> Selection:
        return cls(CANARY_BIT, 2**63 - 1, "every canary")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a cleanup deletes: canary rows per run, in run order."""

    table: str
    selection: Selection
    rows_per_run: dict[RunId, int]

    @property
    def rows(self) -> int:
        return sum(self.rows_per_run.values())


@dataclass(frozen=True, slots=True)
class Deleted:
    """A committed cleanup."""

    snapshot_id: int | None
    operation: str
    rows: int  # deleted
    left: int  # rows still in the range after the commit (a run still writing)


def iceberg_settings(config: PipelineConfig) -> tuple[IcebergSettings, str]:
    """The settings of the config's Iceberg stage and its section name."""
    from pipeline_check.backends.iceberg.probe import IcebergSettings

    for section in config.stages:
        if isinstance(section.settings, IcebergSettings):
            return section.settings, f"stages.{section.name}"
    raise ConfigError(
        "stages",
        [s.name for s in config.stages],
        "has no Iceberg stage",
        "cleanup deletes canaries from an Iceberg table",
    )


def _filter(column: str, selection: Selection) -> BooleanExpression:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    return And(GreaterThanOrEqual(column, selection.lo), LessThanOrEqual(column, selection.hi))  # type: ignore[call-arg,arg-type]


def _tags(table: Table, column: str, selection: Selection) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    scan = table.scan(row_filter=_filter(column, selection), selected_fields=(column,))
    return np.asarray(scan.to_arrow().column(column).to_numpy(zero_copy_only=False), dtype=np.int64)


def plan(settings: IcebergSettings, where: str, selection: Selection) -> tuple[Table, Plan]:
    """The table and the canary rows ``selection`` holds there, per run (a read: nothing changes)."""
    from pyiceberg.types import IntegerType, LongType

    from pipeline_check.backends.iceberg.probe import open_table

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
    return table, Plan(settings.table, selection, per_run)


def delete(table: Table, column: str, plan: Plan) -> Deleted:
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
