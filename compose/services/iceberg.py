"""The Iceberg side: the trades schema, the catalog factory (SQL or REST), and Kafka offsets in snapshot summaries."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import TableUpdate
from pyiceberg.table.update.snapshot import ExpireSnapshots
from pyiceberg.types import (
    DecimalType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from .common import CommonConfig

log = logging.getLogger(__name__)

# Snapshot summary key holding {"<topic>:<partition>": next_offset} for every partition ever written.
OFFSETS_PROPERTY = "kafka.offsets"

TRADES_SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True),
    NestedField(2, "trade_id", LongType(), required=True),
    NestedField(3, "price", DecimalType(18, 8), required=False),
    NestedField(4, "quantity", DecimalType(18, 8), required=False),
    NestedField(5, "side", StringType(), required=False),
    NestedField(6, "event_time", TimestamptzType(), required=False),
    NestedField(7, "trade_time", TimestamptzType(), required=False),
    NestedField(8, "ingest_time", TimestamptzType(), required=False),
    NestedField(9, "kafka_partition", IntegerType(), required=False),
    NestedField(10, "kafka_offset", LongType(), required=False),
)

# The Arrow schema the writer produces; derived from the Iceberg schema so nullability matches.
TRADES_ARROW_SCHEMA: pa.Schema = TRADES_SCHEMA.as_arrow()

TABLE_PROPERTIES = {
    # pyiceberg's fast append adds one manifest per commit; at two commits a second the manifest list
    # (and scan planning) would grow without bound. Merging keeps it at a few manifests.
    "commit.manifest-merge.enabled": "true",
    # keep the metadata folder bounded (one metadata.json per commit otherwise)
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}


def _local_path(uri: str) -> Path | None:
    """The filesystem path of a sqlite:/// or file:// URI, None for anything else."""
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :].split("?", 1)[0]
        return None if rest in {"", ":memory:"} else Path(unquote(rest))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return None


def open_catalog(cfg: CommonConfig, *, writer: bool) -> Catalog:
    """The catalog named "local" (a SQL or a REST catalog, see CommonConfig); on a SQL catalog the writer
    creates the local folders and the catalog tables."""
    props = cfg.catalog_properties()
    if props["type"] == "sql":
        if writer:
            db = _local_path(cfg.iceberg_catalog_uri)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            warehouse = _local_path(cfg.iceberg_warehouse or "")
            if warehouse is not None:
                warehouse.mkdir(parents=True, exist_ok=True)
        else:
            # readers never create the catalog's tables (the writer owns the file)
            props["init_catalog_tables"] = "false"
    return load_catalog("local", **props)


def ensure_table(catalog: Catalog, cfg: CommonConfig, schema: Schema = TRADES_SCHEMA) -> Table:
    """Load the trades table, creating namespace and table (of ``schema``) on first start."""
    try:
        return catalog.load_table(cfg.iceberg_table)
    except NoSuchTableError:
        pass
    try:
        catalog.create_namespace(cfg.table_namespace)
    except NamespaceAlreadyExistsError:
        pass
    try:
        table = catalog.create_table(cfg.iceberg_table, schema=schema, properties=TABLE_PROPERTIES)
        log.info("created Iceberg table %s at %s", cfg.iceberg_table, table.location())
        return table
    except TableAlreadyExistsError:
        return catalog.load_table(cfg.iceberg_table)


class _Transaction(Transaction):
    """pyiceberg's transaction, computing its table metadata once per change.

    pyiceberg 0.12 (pinned) re-applies the staged updates to the table's metadata and deep-copies the
    result on every read of ``Transaction.table_metadata``: some twenty reads per append, each copying
    every snapshot, were most of the consumer's CPU. The staged updates and the table's metadata are
    immutable and replaced (never changed in place) whenever they change, so the result is reused
    until either object is replaced.
    """

    _memo: tuple[TableMetadata, tuple[TableUpdate, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates, memo = self._table.metadata, self._updates, self._memo
        if memo is None or memo[0] is not base or memo[1] is not updates:
            memo = self._memo = (base, updates, super().table_metadata)
        return memo[2]


def transaction(table: Table, *, autocommit: bool = False) -> Transaction:
    """A transaction on ``table`` (``table.transaction()``, without the repeated metadata copies)."""
    return _Transaction(table, autocommit=autocommit)


def expire_snapshots(table: Table, *, older_than_ms: int, keep_last: int) -> int:
    """Drop snapshots committed before ``older_than_ms`` from the table metadata, but for the newest
    ``keep_last``; returns how many.

    Every commit rewrites the metadata JSON with the whole snapshot list, so without expiry appends slow
    down by the minute. Only metadata entries go: data and manifest files stay (the retained snapshots
    still reference them), and the current snapshot - which carries the offsets map - is always kept.
    """
    current = table.current_snapshot()
    if current is None:
        return 0
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    old = [
        s.snapshot_id
        for s in snapshots[: max(0, len(snapshots) - keep_last)]
        if s.timestamp_ms < older_than_ms and s.snapshot_id != current.snapshot_id
    ]
    if old:
        ExpireSnapshots(transaction(table, autocommit=True)).by_ids(old).commit()
    return len(old)


def snapshot_offsets(table: Table) -> tuple[dict[str, int], int | None]:
    """The offsets map of the newest snapshot carrying one (walking back from the current one).

    Returns ({"topic:partition": next_offset}, snapshot_id) or ({}, None).
    """
    snapshot = table.current_snapshot()
    while snapshot is not None:
        raw = snapshot.summary.get(OFFSETS_PROPERTY) if snapshot.summary is not None else None
        if raw:
            return parse_offsets(raw), snapshot.snapshot_id
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return {}, None


def parse_offsets(raw: str) -> dict[str, int]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{OFFSETS_PROPERTY} is not a JSON object: {raw[:100]}")
    return {str(k): int(v) for k, v in data.items()}


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def merge_offsets(previous: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """Every partition ever written stays in the map; this batch's positions replace older ones."""
    return {**previous, **new}


def dump_offsets(offsets: dict[str, int]) -> str:
    return json.dumps(dict(sorted(offsets.items())), separators=(",", ":"))
