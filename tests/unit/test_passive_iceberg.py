"""The iceberg sampler on a real table (pyiceberg SqlCatalog on SQLite in a temp folder): the newest
event time from the data files' statistics, the latest commit's age, and columns that cannot be read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.backends.iceberg.sampler import IcebergSampler
from pipeline_check.backends.sampler import SamplerContext
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.verdict.response_times import ResponseTimes

SCHEMA = Schema(
    NestedField(1, "trade_id", LongType(), required=True),
    NestedField(2, "symbol", StringType(), required=False),
    NestedField(3, "event_time", TimestamptzType(), required=False),
)
CLOCK = Clock()


@pytest.fixture
def table(tmp_path: Path) -> Table:
    (tmp_path / "warehouse").mkdir()
    catalog = SqlCatalog("local", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.create_namespace("market")
    return catalog.create_table("market.trades", schema=SCHEMA)


def append(table: Table, *event_ms: int) -> None:
    rows = {
        "trade_id": list(range(len(event_ms))),
        "symbol": ["BTCUSDT"] * len(event_ms),
        "event_time": [ms * 1000 for ms in event_ms],
    }
    table.append(pa.Table.from_pydict(rows, schema=SCHEMA.as_arrow()))


def sampler(tmp_path: Path, event_time: str | None = None) -> IcebergSampler:
    settings = IcebergSettings(
        catalog={"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/warehouse"},
        catalog_name="local",
        table="market.trades",
    )
    ctx = SamplerContext("iceberg", CLOCK, lambda _: None, ResponseTimes(), ("BTCUSDT",), event_time, 1.0)
    return IcebergSampler(settings, ctx)


def test_freshness_is_the_newest_event_time_of_the_data_files(tmp_path: Path, table: Table) -> None:
    now_ms = int(time.time() * 1000)
    append(table, now_ms - 60_000, now_ms - 20_000)
    s = sampler(tmp_path)
    asyncio.run(s.start())  # every live file once
    first = asyncio.run(s.sample())
    assert first.values["freshness"] == pytest.approx((time.time() * 1000 - (now_ms - 20_000)) / 1000, abs=1)
    assert first.values["snapshot_age"] < 5
    append(table, now_ms - 5_000, now_ms - 40_000)  # only the new snapshot's files are read
    second = asyncio.run(s.sample())
    assert second.position != first.position
    assert second.values["freshness"] == pytest.approx((time.time() * 1000 - (now_ms - 5_000)) / 1000, abs=1)
    assert asyncio.run(s.sample()).position == second.position  # nothing committed: nothing moved
    assert second.ahead_s == 0


def test_a_timestamp_in_the_future_reads_as_skew(tmp_path: Path, table: Table) -> None:
    append(table, int(time.time() * 1000) + 3_600_000)
    s = sampler(tmp_path)
    asyncio.run(s.start())
    reading = asyncio.run(s.sample())
    assert reading.values["freshness"] == 0 and reading.ahead_s == pytest.approx(3600, abs=5)


def test_an_empty_table_has_no_freshness_yet(tmp_path: Path, table: Table) -> None:
    s = sampler(tmp_path)
    asyncio.run(s.start())
    reading = asyncio.run(s.sample())
    assert reading.values == {} and reading.position is None and reading.detail == "the table has no snapshot"


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("nope", "passive.event_time.iceberg='nope' (str): table has no such column"),
        ("symbol", "passive.event_time.iceberg='symbol' (str): is of type string, not a time"),
    ],
)
def test_an_event_time_column_must_be_a_time(tmp_path: Path, table: Table, column: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        asyncio.run(sampler(tmp_path, column).start())
    assert message in str(caught.value)


def test_a_missing_table_names_the_setting(tmp_path: Path, table: Table) -> None:
    s = sampler(tmp_path)
    s.settings = s.settings.model_copy(update={"table": "market.nothing"})
    with pytest.raises(EndpointError, match=r"stages\.iceberg\.table='market\.nothing'"):
        asyncio.run(s.start())
