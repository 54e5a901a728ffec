"""Deliberate faults of the reference pipeline: switches, what each does to rows and pages (services/faults.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from services.common import ConfigError
from services.faults import (
    DROP_KEY,
    DUPLICATE_KEY,
    MAX_DECIMAL,
    ApiFaults,
    ConsumerFaults,
    hash_fraction,
    picked,
    round_price,
    shift_ms,
    through_float64,
)
from services.trades import MAX_EPOCH_MS, Row, Trade

TOPIC = "market.trades.raw"


def row(trade_id: int, partition: int = 0, price: str = "65000.12345678", time_ms: int = 1_700_000_000_000) -> Row:
    trade = Trade("BTCUSDT", trade_id, Decimal(price), Decimal("0.5"), "buy", time_ms + 3, time_ms)
    return Row(trade, time_ms + 9, TOPIC, partition, trade_id)


def rows(count: int, partitions: int = 3) -> list[Row]:
    return [row(10**9 + i, partition=i % partitions) for i in range(count)]


# ---------------------------------------------------------------- switches from the environment


def test_every_switch_is_off_by_default_and_changes_nothing() -> None:
    faults = ConsumerFaults.from_env(3, env={})
    assert faults == ConsumerFaults()
    assert faults.warnings() == []
    batch = rows(100)
    assert faults.apply(batch) is batch
    api = ApiFaults.from_env(10_000, env={})
    assert api.warnings() == []
    assert api.order_by() == "ORDER BY trade_time DESC, trade_id DESC"
    assert api.page_size(5000) == 5000


def test_switches_are_read_and_each_one_on_is_warned_about() -> None:
    env = {
        "UNSAFE_DROP_FRACTION": "0.05",
        "UNSAFE_DUPLICATE_FRACTION": "0.1",
        "UNSAFE_DROP_PARTITION": "1",
        "UNSAFE_STALL_PARTITION": "2",
        "UNSAFE_ROUND_PRICE_DECIMALS": "2",
        "UNSAFE_FLOAT_PRICES": "1",
        "UNSAFE_SHIFT_TIME_MS": "-3600000",
        "UNSAFE_REAPPEND_AFTER_MS": "1500",
        "UNSAFE_NEVER_COMMIT": "true",
    }
    faults = ConsumerFaults.from_env(3, env=env)
    assert faults == ConsumerFaults(0.05, 0.1, 1, 2, 2, True, -3_600_000, 1500, True)
    warned = faults.warnings()
    assert [line.split("=", 1)[0] for line in warned] == list(env)
    assert all("never for real use" in line for line in warned)
    api = ApiFaults.from_env(10_000, env={"UNSAFE_API_OLDEST_FIRST": "1", "UNSAFE_API_PAGE_CAP": "100"})
    assert api == ApiFaults(oldest_first=True, page_cap=100)
    assert [line.split("=", 1)[0] for line in api.warnings()] == ["UNSAFE_API_OLDEST_FIRST", "UNSAFE_API_PAGE_CAP"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("UNSAFE_DROP_FRACTION", "5%", "UNSAFE_DROP_FRACTION='5%' (env): must be a number between 0 and 1"),
        ("UNSAFE_DROP_FRACTION", "1.5", "UNSAFE_DROP_FRACTION='1.5' (env): must be between 0 and 1"),
        ("UNSAFE_DUPLICATE_FRACTION", "nan", "UNSAFE_DUPLICATE_FRACTION='nan' (env): must be between 0 and 1"),
        ("UNSAFE_DROP_PARTITION", "3", "UNSAFE_DROP_PARTITION='3' (env): must be <= 2"),
        ("UNSAFE_STALL_PARTITION", "-1", "UNSAFE_STALL_PARTITION='-1' (env): must be >= 0"),
        ("UNSAFE_ROUND_PRICE_DECIMALS", "8", "UNSAFE_ROUND_PRICE_DECIMALS='8' (env): must be <= 7"),
        ("UNSAFE_FLOAT_PRICES", "double", "UNSAFE_FLOAT_PRICES='double' (env): must be a boolean"),
        ("UNSAFE_SHIFT_TIME_MS", "1h", "UNSAFE_SHIFT_TIME_MS='1h' (env): must be an integer"),
        ("UNSAFE_REAPPEND_AFTER_MS", "0", "UNSAFE_REAPPEND_AFTER_MS='0' (env): must be >= 1"),
        ("UNSAFE_NEVER_COMMIT", "always", "UNSAFE_NEVER_COMMIT='always' (env): must be a boolean"),
    ],
)
def test_a_bad_switch_value_is_one_line_naming_it(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ConsumerFaults.from_env(3, env={name: value})
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_bad_api_page_cap_names_the_range() -> None:
    with pytest.raises(ConfigError, match=r"UNSAFE_API_PAGE_CAP='0' \(env\): must be >= 1"):
        ApiFaults.from_env(10_000, env={"UNSAFE_API_PAGE_CAP": "0"})
    with pytest.raises(ConfigError, match=r"UNSAFE_API_PAGE_CAP='10001' \(env\): must be <= 10000"):
        ApiFaults.from_env(10_000, env={"UNSAFE_API_PAGE_CAP": "10001"})


# ---------------------------------------------------------------- which trades a fault hits


def test_the_same_trade_ids_are_picked_every_time_and_about_the_fraction_of_them() -> None:
    ids = range(10**9, 10**9 + 20_000)
    first = [i for i in ids if picked(i, 0.05, DROP_KEY)]
    assert first == [i for i in ids if picked(i, 0.05, DROP_KEY)]
    assert 900 <= len(first) <= 1100  # 5 % of 20,000, binomial sd ~31
    assert not any(picked(i, 0.0, DROP_KEY) for i in ids)
    assert all(picked(i, 1.0, DROP_KEY) for i in ids)
    assert all(0.0 <= hash_fraction(i, DROP_KEY) < 1.0 for i in (0, 1, 2**62 | 5, 2**63 - 1))


def test_drop_and_duplicate_pick_independent_trades() -> None:
    ids = range(10**9, 10**9 + 20_000)
    dropped = {i for i in ids if picked(i, 0.5, DROP_KEY)}
    doubled = {i for i in ids if picked(i, 0.5, DUPLICATE_KEY)}
    assert 4500 <= len(dropped & doubled) <= 5500  # a quarter, as for independent picks


def test_dropped_trades_vanish_and_duplicated_ones_are_written_twice_in_the_same_batch() -> None:
    batch = rows(2000)
    written = ConsumerFaults(drop_fraction=0.1, duplicate_fraction=0.1).apply(batch)
    ids = [r.trade.trade_id for r in written]
    expected: list[int] = []
    for r in batch:
        tid = r.trade.trade_id
        if not picked(tid, 0.1, DROP_KEY):
            expected += [tid] * (2 if picked(tid, 0.1, DUPLICATE_KEY) else 1)
    assert ids == expected
    assert len(set(ids)) < 2000 < len(ids) + 200  # some lost, some doubled


def test_a_dropped_partition_loses_exactly_its_trades() -> None:
    batch = rows(300)
    written = ConsumerFaults(drop_partition=1).apply(batch)
    assert [r.trade.trade_id for r in written] == [r.trade.trade_id for r in batch if r.partition != 1]
    assert written == [r for r in batch if r.partition != 1]  # the others unchanged


# ---------------------------------------------------------------- what a fault does to values


@pytest.mark.parametrize(
    ("price", "decimals", "expected"),
    [
        ("65000.12345678", 2, "65000.12"),
        ("65000.125", 2, "65000.12"),  # half-even
        ("65000.135", 2, "65000.14"),
        ("0.004", 2, "0.00"),
        ("65000.5", 0, "65000"),
    ],
)
def test_round_price(price: str, decimals: int, expected: str) -> None:
    assert round_price(Decimal(price), decimals) == Decimal(expected)
    assert str(round_price(Decimal(price), decimals)) == expected


def test_rounding_the_largest_price_stays_within_the_column() -> None:
    assert round_price(Decimal("9999999999.99999999"), 2) == Decimal("9999999999.99999999")


def test_float64_keeps_short_prices_and_changes_long_ones() -> None:
    assert through_float64(Decimal("65000.10")) == Decimal("65000.10")
    assert through_float64(Decimal("65000.12345678")) == Decimal("65000.12345678")
    assert through_float64(Decimal("1234567890.12345678")) == Decimal("1234567890.12345672")
    assert through_float64(Decimal("0.00000001")) == Decimal("0.00000001")
    # float64 rounds the largest decimal(18,8) up to 1e10, which the column cannot hold
    assert through_float64(MAX_DECIMAL) == MAX_DECIMAL


def test_time_shift_moves_both_times_and_stays_in_range() -> None:
    assert shift_ms(1_700_000_000_000, 3_600_000) == 1_700_003_600_000
    assert shift_ms(1000, -3_600_000) == 0
    assert shift_ms(MAX_EPOCH_MS - 1, 10) == MAX_EPOCH_MS
    faults = ConsumerFaults(round_price_decimals=2, float_prices=True, shift_time_ms=3_600_000)
    (written,) = faults.apply([row(7, price="1234567890.12345678")])
    assert written.trade.price == Decimal("1234567890.11999989")  # rounded to .12, then through float64
    assert (written.trade.trade_time_ms, written.trade.event_time_ms) == (1_700_003_600_000, 1_700_003_600_003)
    assert (written.trade.trade_id, written.offset, written.ingest_time_ms) == (7, 7, 1_700_000_000_009)


def test_api_switches_turn_the_order_and_cap_the_page() -> None:
    api = ApiFaults(oldest_first=True, page_cap=100)
    assert api.order_by() == "ORDER BY trade_time ASC, trade_id ASC"
    assert (api.page_size(5000), api.page_size(40)) == (100, 40)
