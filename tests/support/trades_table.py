"""A reference trades table in a temp folder (pyiceberg SQL catalog) and trade rows to write into it, for the
tests of the reference services (compose/ is on sys.path: tests/unit/conftest.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from pyiceberg.table import Table
from services.common import CommonConfig
from services.iceberg import TRADES_ARROW_SCHEMA, ensure_table, open_catalog
from services.trades import Row, Trade, to_arrow

TOPIC = "market.trades.raw"
T0 = 1_700_000_000_000  # ms, the start of a 10 s bucket


def config(tmp_path: Path) -> CommonConfig:
    """The services' settings for a catalog and warehouse under ``tmp_path``."""
    return CommonConfig.from_env(
        {
            "KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "RAW_TOPIC": TOPIC,
            "RAW_TOPIC_PARTITIONS": "1",
            "DLQ_TOPIC": "market.trades.dlq",
            "ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path}/catalog.db",
            "ICEBERG_WAREHOUSE": f"file://{tmp_path}/warehouse",
            "ICEBERG_TABLE": "market.trades",
        }
    )


def new_table(tmp_path: Path) -> Table:
    """The trades table as the consumer creates it, empty."""
    cfg = config(tmp_path)
    return ensure_table(open_catalog(cfg, writer=True), cfg)


def trades(ids: range, symbol: str = "BTCUSDT", price: str = "100.5", time_ms: int = T0, step_ms: int = 10) -> pa.Table:
    """A trade per id, at ``time_ms + id * step_ms`` (a trade's time is fixed by its id)."""
    rows = [
        Row(
            Trade(symbol, tid, Decimal(price), Decimal("1"), "buy", time_ms + tid * step_ms, time_ms + tid * step_ms),
            time_ms,
            TOPIC,
            0,
            tid,
        )
        for tid in ids
    ]
    return to_arrow(rows, TRADES_ARROW_SCHEMA)
