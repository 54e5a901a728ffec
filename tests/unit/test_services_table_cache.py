"""The query API's table reader and its cache (compose/services/api.py, table_cache.py) on a real pyiceberg SQL
catalog in a temp folder: answers match a plain pyiceberg scan, a commit is visible to the very next request,
and what is cached is reused until then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table
from services.api import TableReader
from services.api_time import TimeFormat
from services.faults import ApiFaults
from services.iceberg import OFFSETS_PROPERTY
from services.table_cache import TableCache

from tests.unit.test_services_writes import T0, TOPIC, config, new_table, trades


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return new_table(tmp_path)


def append(table: Table, ids: range, symbol: str = "BTCUSDT") -> None:
    table.append(trades(ids, symbol), snapshot_properties={OFFSETS_PROPERTY: json.dumps({f"{TOPIC}:0": ids.stop})})


def reference(table: Table, symbol: str, start_ms: int | None, end_ms: int | None) -> list[int]:
    """The trade ids pyiceberg's own planning and reading give for the query, newest first."""
    row_filter = EqualTo("symbol", symbol)  # type: ignore[call-arg,arg-type]
    if start_ms is not None:
        row_filter = And(row_filter, GreaterThanOrEqual("trade_time", start_ms * 1000))  # type: ignore[call-arg,arg-type]
    if end_ms is not None:
        row_filter = And(row_filter, LessThan("trade_time", end_ms * 1000))  # type: ignore[call-arg,arg-type]
    table.refresh()
    return sorted(table.scan(row_filter=row_filter).to_arrow()["trade_id"].to_pylist(), reverse=True)


def us(ms: int | None) -> int | None:
    return None if ms is None else ms * 1000


def test_answers_match_a_plain_scan_for_any_window(table: Table, tmp_path: Path) -> None:
    # trade i at T0 + 10 i ms; five appends, two symbols, so files prune by time and by symbol
    for start in range(0, 500, 100):
        append(table, range(start, start + 100))
    append(table, range(1000, 1050), "ETHUSDT")
    reader = TableReader(config(tmp_path), ApiFaults(), TimeFormat())
    windows = [(None, None), (T0, T0 + 1000), (T0 + 995, T0 + 2005), (T0 + 4990, None), (None, T0 + 5)]
    for symbol in ("BTCUSDT", "ETHUSDT", "XRPUSDT"):
        for start_ms, end_ms in windows:
            rows, snapshot_id = reader.trades(symbol, us(start_ms), us(end_ms), 10_000)
            want = reference(table, symbol, start_ms, end_ms)
            assert [r["trade_id"] for r in rows] == want, (symbol, start_ms, end_ms)
            assert snapshot_id == table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    # pruning by statistics: a window inside the second append reads only its file
    plan = reader.cache.plan(reader.load(), reader.load().current_snapshot())  # type: ignore[arg-type]
    assert len(plan.files or ()) == 6
    assert len(plan.tasks("BTCUSDT", (T0 + 1000) * 1000, (T0 + 1990) * 1000)) == 1
    assert plan.tasks("ETHUSDT", None, (T0 + 10_000) * 1000) == []  # its trades start at T0 + 10 s


def test_a_commit_is_visible_to_the_next_request_and_nothing_is_reloaded_before(table: Table, tmp_path: Path) -> None:
    append(table, range(100))
    reader = TableReader(config(tmp_path), ApiFaults(), TimeFormat())
    cache: TableCache = reader.cache
    rows, first = reader.trades("BTCUSDT", None, None, 10)
    assert len(rows) == 10 and (cache.loads, cache.manifest_reads) == (1, 1)
    for _ in range(5):  # no commit in between: the table, its plan and its manifests are reused
        assert reader.trades("BTCUSDT", None, None, 10) == (rows, first)
    assert (cache.loads, cache.manifest_reads) == (1, 1)
    append(table, range(100, 200))  # a commit by another process (the consumer)
    rows, second = reader.trades("BTCUSDT", None, None, 10)
    assert second != first and rows[0]["trade_id"] == 199
    # one more load; of the new snapshot's manifests only the one it wrote is decoded
    assert (cache.loads, cache.manifest_reads) == (2, 2)


def test_a_table_created_after_the_api_started_is_found(tmp_path: Path) -> None:
    # the API is up before the consumer made the catalog
    reader = TableReader(config(tmp_path), ApiFaults(), TimeFormat())
    with pytest.raises(Exception, match="no such table: iceberg_tables"):
        reader.trades("BTCUSDT", None, None, 100)
    append(new_table(tmp_path), range(3))
    assert [r["trade_id"] for r in reader.trades("BTCUSDT", None, None, 100)[0]] == [2, 1, 0]
