"""Opening the table an ``iceberg`` stage names, and the newest value of a time column in it, read from
the data files' column statistics (no data file is opened)."""

from __future__ import annotations

from pyiceberg.catalog import load_catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.manifest import DataFileContent, ManifestEntry, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import (
    DateType,
    IcebergType,
    IntegerType,
    LongType,
    PrimitiveType,
    TimestampNanoType,
    TimestampType,
    TimestamptzNanoType,
    TimestamptzType,
)

from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.core.redaction import redact

# epoch milliseconds per unit of each type a time column may have (int and long: epoch ms)
MS_PER_UNIT: dict[type[IcebergType], float] = {
    TimestampType: 0.001,
    TimestamptzType: 0.001,
    TimestampNanoType: 0.000_001,
    TimestamptzNanoType: 0.000_001,
    DateType: 86_400_000.0,
    LongType: 1.0,
    IntegerType: 1.0,
}


def open_table(settings: IcebergSettings, stage: str) -> Table:
    """The stage's table, read-only (a SQL catalog's tables are never created); ``EndpointError`` when the
    catalog or the table cannot be read."""
    where = f"stages.{stage}"
    properties = dict(settings.catalog)
    uri = str(redact(properties.get("uri", settings.catalog_name)))
    if properties.get("type") == "sql":
        properties.setdefault("init_catalog_tables", "false")
    try:
        return load_catalog(settings.catalog_name, **properties).load_table(settings.table)
    except NoSuchTableError:
        raise EndpointError(
            f"{where}.table", settings.table, f"no such table in catalog {uri}",
            "has the pipeline created it yet? is the name right (and catalog_name the writer's)?",
        ) from None  # fmt: skip
    except Exception as exc:  # pyiceberg raises many kinds here; all mean "this catalog cannot be used"
        raise EndpointError(
            f"{where}.catalog", uri, f"cannot read the catalog ({type(exc).__name__}: {exc})",
            "check the catalog properties (type, uri, warehouse)",
        ) from None  # fmt: skip


class TimeColumn:
    """A table column holding event times, and how to read its upper bounds as epoch ms."""

    def __init__(self, table: Table, column: str, setting: str) -> None:
        fields = {f.name: f for f in table.schema().fields}
        if column not in fields:
            raise ConfigError(setting, column, "table has no such column", f"columns: {', '.join(fields)}")
        field = fields[column]
        unit = MS_PER_UNIT.get(type(field.field_type))
        if unit is None:
            raise ConfigError(
                setting, column, f"is of type {field.field_type}, not a time",
                "name a timestamp, date, or epoch-ms long column",
            )  # fmt: skip
        self.name = column
        self.field_id = field.field_id
        self.type: PrimitiveType = field.field_type  # type: ignore[assignment]  # a time type, checked above
        self.unit = unit

    def newest_ms(self, entries: list[ManifestEntry]) -> float | None:
        """The largest upper bound among the data files of ``entries`` (None when none has one)."""
        bounds = [
            e.data_file.upper_bounds.get(self.field_id)
            for e in entries
            if e.data_file.content == DataFileContent.DATA and e.data_file.upper_bounds
        ]
        values: list[int] = []
        for raw in bounds:
            value = from_bytes(self.type, raw) if raw is not None else None
            if isinstance(value, int):
                values.append(value)
        return max(values) * self.unit if values else None

    def newest_in_state(self, table: Table, snapshot: Snapshot) -> float | None:
        """Over every live data file of ``snapshot`` (once, at the start: it reads every manifest)."""
        io = table.io
        return self.newest_ms([e for m in snapshot.manifests(io) for e in m.fetch_manifest_entry(io)])

    def newest_added(self, table: Table, snapshot: Snapshot) -> float | None:
        """Over the data files ``snapshot`` itself added (only the manifests it wrote are read)."""
        io, sid = table.io, snapshot.snapshot_id
        entries = [
            e
            for m in snapshot.manifests(io)
            if m.added_snapshot_id == sid and m.added_files_count
            for e in m.fetch_manifest_entry(io)
            if e.snapshot_id == sid and e.status == ManifestEntryStatus.ADDED
        ]
        return self.newest_ms(entries)
