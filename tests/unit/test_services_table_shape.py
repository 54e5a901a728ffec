"""The consumer's table shape (compose/services/table_shape.py): TABLE_ID_FORMAT writes trade_id as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyiceberg.types import LongType, StringType
from services.common import CommonConfig, ConfigError
from services.iceberg import ensure_table, open_catalog
from services.table_shape import TableShape

from tests.unit.test_services_writes import TOPIC, trades


def test_unset_the_id_is_a_long() -> None:
    shape = TableShape.from_env({})
    assert isinstance(shape.schema.find_field("trade_id").field_type, LongType)
    rows = trades(range(3))
    assert shape.rows(rows) is rows


def test_a_format_writes_the_id_as_text(tmp_path: Path) -> None:
    shape = TableShape.from_env({"TABLE_ID_FORMAT": "BINANCE-{id}"})
    assert isinstance(shape.schema.find_field("trade_id").field_type, StringType)
    cfg = CommonConfig.from_env(
        {
            "KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "RAW_TOPIC": TOPIC,
            "RAW_TOPIC_PARTITIONS": "1",
            "DLQ_TOPIC": "market.trades.dlq",
            "ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path}/catalog.db",
            "ICEBERG_WAREHOUSE": f"file://{tmp_path}/warehouse",
            "ICEBERG_TABLE": "market.trades_text",
        }
    )
    table = ensure_table(open_catalog(cfg, writer=True), cfg, shape.schema)
    table.append(shape.rows(trades(range(1, 4))))
    assert sorted(table.scan().to_arrow()["trade_id"].to_pylist()) == ["BINANCE-1", "BINANCE-2", "BINANCE-3"]
    around = TableShape.from_env({"TABLE_ID_FORMAT": "{id}@x"})
    assert around.rows(trades(range(7, 8)))["trade_id"].to_pylist() == ["7@x"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TABLE_ID_FORMAT": "BINANCE-{tid}"}, "must hold {id} once"),
        ({"TABLE_ID_FORMAT": "{id}-{id}"}, "must hold {id} once"),
        (
            {
                "TABLE_ID_FORMAT": "B-{id",
            },
            "is not a template",
        ),
        ({"TABLE_ID_FORMAT": "B-{id}", "WRITE_MODE": "upsert"}, "WRITE_MODE='upsert' (env): keys rows by the numeric"),
        ({"TABLE_ID_FORMAT": "B-{id}", "UNSAFE_DELETE_FRACTION": "0.2"}, "UNSAFE_DELETE_FRACTION='0.2' (env)"),
    ],
)
def test_bad_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("(", r"\(").replace(")", r"\)")):
        TableShape.from_env(env)
