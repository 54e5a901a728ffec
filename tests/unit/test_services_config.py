"""Env parsing, offsets-map helpers and record keys of the reference services (compose/services)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from services.common import (
    EXIT_CONFIG,
    CommonConfig,
    ConfigError,
    env_bool,
    env_int,
    env_port,
    load_config,
)
from services.iceberg import (
    OFFSETS_PROPERTY,
    dump_offsets,
    merge_offsets,
    parse_offsets,
    snapshot_offsets,
)
from services.ingestor import record_key

ENV = {
    "KAFKA_BOOTSTRAP": "127.0.0.1:19092",
    "RAW_TOPIC": "market.trades.raw",
    "RAW_TOPIC_PARTITIONS": "3",
    "DLQ_TOPIC": "market.trades.dlq",
    "ICEBERG_CATALOG_URI": "sqlite:////tmp/x/catalog.db",
    "ICEBERG_WAREHOUSE": "file:///tmp/x/warehouse",
    "ICEBERG_TABLE": "market.trades",
}


def test_common_config_from_env() -> None:
    cfg = CommonConfig.from_env(ENV)
    assert cfg.raw_topic_partitions == 3
    assert (cfg.table_namespace, cfg.table_name) == ("market", "trades")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KAFKA_BOOTSTRAP", None, "KAFKA_BOOTSTRAP=<unset> (env): required"),
        ("RAW_TOPIC_PARTITIONS", "three", "RAW_TOPIC_PARTITIONS='three' (env): must be an integer"),
        ("RAW_TOPIC_PARTITIONS", "0", "must be >= 1"),
        ("RAW_TOPIC", "bad topic", "RAW_TOPIC='bad topic' (env): must be a Kafka topic name"),
        ("ICEBERG_TABLE", "trades", "ICEBERG_TABLE='trades' (env): must be <namespace>.<table>"),
        ("ICEBERG_WAREHOUSE", "/tmp/w", "ICEBERG_WAREHOUSE='/tmp/w' (env): must be a URI"),
    ],
)
def test_config_errors_name_the_variable(name: str, value: str | None, message: str) -> None:
    env = dict(ENV)
    if value is None:
        del env[name]
    else:
        env[name] = value
    with pytest.raises(ConfigError) as exc:
        CommonConfig.from_env(env)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_env_helpers_defaults_and_ranges() -> None:
    assert env_int("FLUSH_INTERVAL_MS", 500, env={}) == 500
    assert env_int("FLUSH_INTERVAL_MS", 500, env={"FLUSH_INTERVAL_MS": " 250 "}) == 250
    assert env_port("HEALTH_PORT", env={"HEALTH_PORT": "18082"}) == 18082
    with pytest.raises(ConfigError, match="HEALTH_PORT='70000'"):
        env_port("HEALTH_PORT", env={"HEALTH_PORT": "70000"})
    assert env_bool("CONSUMER_UNSAFE_SKIP_IDEMPOTENCE", False, env={}) is False
    assert env_bool("X", False, env={"X": "1"}) is True
    assert env_bool("X", True, env={"X": "0"}) is False
    with pytest.raises(ConfigError, match="X='maybe'"):
        env_bool("X", False, env={"X": "maybe"})


def test_load_config_exits_with_code_2() -> None:
    def bad() -> None:
        raise ConfigError("HEALTH_PORT=<unset> (env): required")

    with pytest.raises(SystemExit) as exc:
        load_config(bad)
    assert exc.value.code == EXIT_CONFIG == 2


# ---------------------------------------------------------------- offsets map in snapshot summaries


def test_offsets_map_round_trip_and_merge() -> None:
    previous = {"t:0": 10, "t:1": 5}
    merged = merge_offsets(previous, {"t:1": 9, "t:2": 1})
    assert merged == {"t:0": 10, "t:1": 9, "t:2": 1}  # partitions not in this batch are kept
    assert parse_offsets(dump_offsets(merged)) == merged
    assert json.loads(dump_offsets(merged)) == merged


@dataclass
class FakeSnapshot:
    snapshot_id: int
    parent_snapshot_id: int | None
    summary: dict[str, str] = field(default_factory=dict)


class FakeTable:
    def __init__(self, *snapshots: FakeSnapshot) -> None:
        self._by_id = {s.snapshot_id: s for s in snapshots}
        self._current = snapshots[-1] if snapshots else None

    def current_snapshot(self) -> FakeSnapshot | None:
        return self._current

    def snapshot_by_id(self, snapshot_id: int) -> FakeSnapshot | None:
        return self._by_id.get(snapshot_id)


def test_snapshot_offsets_walks_back_to_the_newest_snapshot_with_a_map() -> None:
    table = FakeTable(
        FakeSnapshot(1, None, {OFFSETS_PROPERTY: '{"t:0":5}'}),
        FakeSnapshot(2, 1, {OFFSETS_PROPERTY: '{"t:0":9,"t:1":3}'}),
        FakeSnapshot(3, 2, {}),  # e.g. a maintenance commit by another writer
    )
    assert snapshot_offsets(table) == ({"t:0": 9, "t:1": 3}, 2)  # type: ignore[arg-type]
    assert snapshot_offsets(FakeTable()) == ({}, None)  # type: ignore[arg-type]
    assert snapshot_offsets(FakeTable(FakeSnapshot(1, None))) == ({}, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- ingestor keys


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        (b'{"e":"trade","s":"BTCUSDT","t":1}', b"BTCUSDT"),
        (b'{"e":"trade","t":1}', None),
        (b'{"s":5}', None),
        (b"[1]", None),
        (b"not json", None),
        (b"\xff", None),
    ],
)
def test_record_key_is_the_symbol_or_none(frame: bytes, key: bytes | None) -> None:
    assert record_key(frame) == key
