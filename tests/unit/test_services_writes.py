"""Write modes of the consumer (compose/services/writes.py), on a real pyiceberg SQL catalog in a temp folder."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.table import Table
from services.common import CommonConfig, ConfigError
from services.iceberg import (
    OFFSETS_PROPERTY,
    TRADES_ARROW_SCHEMA,
    ensure_table,
    expire_snapshots,
    open_catalog,
    snapshot_offsets,
)
from services.trades import Row, Trade, to_arrow
from services.writes import (
    WriteConfig,
    WriteMode,
    bucket_filter,
    buckets,
    latest_per_key,
    split_by_bucket,
    write,
)

TOPIC = "market.trades.raw"
T0 = 1_700_000_000_000  # ms, the start of a 10 s bucket
BUCKET_US = 10_000_000


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


def config(folder: Path) -> CommonConfig:
    """The services' settings for a SQL catalog and warehouse in ``folder``."""
    return CommonConfig.from_env(
        {
            "KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "RAW_TOPIC": TOPIC,
            "RAW_TOPIC_PARTITIONS": "1",
            "DLQ_TOPIC": "market.trades.dlq",
            "ICEBERG_CATALOG_URI": f"sqlite:///{folder}/catalog.db",
            "ICEBERG_WAREHOUSE": f"file://{folder}/warehouse",
            "ICEBERG_TABLE": "market.trades",
        }
    )


def new_table(folder: Path) -> Table:
    """An empty trades table in a SQL catalog in ``folder``."""
    cfg = config(folder)
    return ensure_table(open_catalog(cfg, writer=True), cfg)


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return new_table(tmp_path)


def props(offset: int) -> dict[str, str]:
    return {OFFSETS_PROPERTY: json.dumps({f"{TOPIC}:0": offset})}


def keys(table: Table) -> list[tuple[str, int]]:
    rows = table.scan().to_arrow()
    return sorted(zip(rows["symbol"].to_pylist(), rows["trade_id"].to_pylist(), strict=True))


def operations_since(table: Table, snapshot_id: int | None) -> list[str]:
    """Operations of the snapshots committed after ``snapshot_id``, oldest first."""
    after = [s for s in table.snapshots() if snapshot_id is None or s.sequence_number > _seq(table, snapshot_id)]
    return [s.summary.operation.value for s in after if s.summary is not None]


def _seq(table: Table, snapshot_id: int) -> int:
    snapshot = table.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    return snapshot.sequence_number or 0


# ---------------------------------------------------------------- settings


def test_write_settings_default_to_append_and_reject_redelivery_into_appends() -> None:
    assert WriteConfig.from_env({}) == WriteConfig(WriteMode.APPEND, False, 10_000)
    cfg = WriteConfig.from_env({"WRITE_MODE": "Upsert", "REDELIVER_LAST_FLUSH": "1", "OVERWRITE_BUCKET_MS": "5000"})
    assert cfg == WriteConfig(WriteMode.UPSERT, True, 5000)
    with pytest.raises(ConfigError, match=r"WRITE_MODE='merge' \(env\): must be one of append, upsert, overwrite"):
        WriteConfig.from_env({"WRITE_MODE": "merge"})
    with pytest.raises(ConfigError, match=r"REDELIVER_LAST_FLUSH=1 \(env\): .*set WRITE_MODE=upsert"):
        WriteConfig.from_env({"REDELIVER_LAST_FLUSH": "1"})
    with pytest.raises(ConfigError, match=r"OVERWRITE_BUCKET_MS='10' \(env\): must be >= 100"):
        WriteConfig.from_env({"OVERWRITE_BUCKET_MS": "10"})


# ---------------------------------------------------------------- pure helpers


def test_latest_per_key_prefers_the_new_rows_and_keeps_one_per_key() -> None:
    old = pa.concat_tables([trades(range(1, 4), price="1"), trades(range(3, 4), price="2")])  # key 3 twice
    new = pa.concat_tables([trades(range(3, 6), price="9"), trades(range(1, 2), "ETHUSDT", price="9")])
    merged = latest_per_key(new, old)
    got = {(s, t): p for s, t, p in zip(*(merged[c].to_pylist() for c in ("symbol", "trade_id", "price")), strict=True)}
    assert len(merged) == len(got) == 6
    assert got[("BTCUSDT", 1)] == got[("BTCUSDT", 2)] == Decimal("1")
    assert got[("BTCUSDT", 3)] == got[("ETHUSDT", 1)] == Decimal("9")  # same trade id, other symbol: its own key
    assert latest_per_key(pa.concat_tables([new, new])).equals(new)


def test_buckets_split_rows_by_trade_time() -> None:
    rows = trades(range(10), step_ms=3000)  # 0, 3, ... 27 s after T0: buckets 0..2
    of_row = buckets(rows, BUCKET_US).to_pylist()
    first = T0 * 1000 // BUCKET_US
    assert of_row == [first + (i * 3) // 10 for i in range(10)]
    parts = split_by_bucket(rows, [first, first + 2], BUCKET_US)
    assert [p["trade_id"].to_pylist() for p in parts] == [[0, 1, 2, 3], [7, 8, 9], [4, 5, 6]]
    assert "trade_time" in str(bucket_filter([first], BUCKET_US))


# ---------------------------------------------------------------- commits


@pytest.mark.parametrize("mode", [WriteMode.UPSERT, WriteMode.OVERWRITE])
def test_rewrites_keep_one_row_per_key_and_the_offsets_map(table: Table, mode: WriteMode) -> None:
    cfg = WriteConfig(mode, redeliver_last=True)
    other = trades(range(500, 510), "ETHUSDT", time_ms=T0 + 60_000)  # another bucket, another symbol
    write(table, other, props(10), cfg)
    first_snapshot = table.current_snapshot()
    assert first_snapshot is not None
    first_batch = trades(range(300))
    write(table, first_batch, props(310), cfg)
    # the next flush re-delivers the previous one's rows with its own
    write(table, latest_per_key(trades(range(300, 600)), first_batch), props(610), cfg)
    write(table, trades(range(100, 200), price="7"), props(700), cfg)  # later versions of 100..199
    assert keys(table) == sorted([("BTCUSDT", i) for i in range(600)] + [("ETHUSDT", i) for i in range(500, 510)])
    prices = table.scan(row_filter="trade_id >= 100 and trade_id < 200").to_arrow()["price"].to_pylist()
    assert set(prices) == {Decimal("7")}
    assert snapshot_offsets(table)[0] == {f"{TOPIC}:0": 700}
    added = sum(int(s.summary.get("added-records") or 0) for s in table.snapshots() if s.summary is not None)
    assert added > len(keys(table))  # rows were rewritten, not only added
    operations = operations_since(table, first_snapshot.snapshot_id)
    if mode is WriteMode.OVERWRITE:
        assert operations == ["overwrite"] * 3  # new rows arrive through overwrite snapshots only
        # the other bucket's file was never rewritten
        eth = table.scan(row_filter="symbol == 'ETHUSDT'").plan_files()
        first_files = table.scan(snapshot_id=first_snapshot.snapshot_id).plan_files()
        assert [t.file.file_path for t in eth] == [t.file.file_path for t in first_files]
    else:
        # new keys are appended; a flush replacing keys rewrites the files holding them
        assert operations == ["append", "overwrite", "overwrite"]


# ---------------------------------------------------------------- cost


def test_an_append_applies_the_staged_updates_to_the_metadata_only_once_per_change(
    table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyiceberg's own Transaction recomputes (and deep-copies, O(snapshots)) the table metadata on every
    # read of table_metadata: about twenty per append
    calls = count_metadata_updates(monkeypatch)
    write(table, trades(range(10)), props(10), WriteConfig())
    calls.clear()
    write(table, trades(range(10, 20)), props(20), WriteConfig())
    assert len(calls) <= 3
    assert keys(table) == [("BTCUSDT", i) for i in range(20)]


def test_expiring_many_snapshots_costs_one_metadata_update(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyiceberg's ExpireSnapshots reads the transaction's metadata twice per snapshot id, and its own
    # Transaction deep-copies all of it on each read: O(expired x kept) CPU, 7 s for 200 of 300 snapshots,
    # tens of seconds for a few hundred more, blocking the consumer's fetch loop (its flush awaits it)
    for start in range(30):
        write(table, trades(range(start, start + 1)), props(start + 1), WriteConfig())
    calls = count_metadata_updates(monkeypatch)
    assert expire_snapshots(table, older_than_ms=table.snapshots()[-1].timestamp_ms, keep_last=1) == 29
    assert len(calls) <= 3


def count_metadata_updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time a transaction applies its updates to the table metadata."""
    import pyiceberg.table

    calls: list[int] = []
    real = pyiceberg.table.update_table_metadata

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pyiceberg.table, "update_table_metadata", counted)
    return calls


def test_expiry_keeps_the_current_snapshot_its_offsets_and_every_row(table: Table) -> None:
    for start in range(0, 50, 10):
        write(table, trades(range(start, start + 10)), props(start + 10), WriteConfig())
    snapshots = table.snapshots()
    assert expire_snapshots(table, older_than_ms=snapshots[2].timestamp_ms, keep_last=0) == 2  # strictly older
    assert expire_snapshots(table, older_than_ms=snapshots[-1].timestamp_ms + 60_000, keep_last=2) == 1
    assert expire_snapshots(table, older_than_ms=snapshots[-1].timestamp_ms + 60_000, keep_last=0) == 1
    assert [s.snapshot_id for s in table.snapshots()] == [snapshots[-1].snapshot_id]
    assert snapshot_offsets(table) == ({f"{TOPIC}:0": 50}, snapshots[-1].snapshot_id)
    assert keys(table) == [("BTCUSDT", i) for i in range(50)]
