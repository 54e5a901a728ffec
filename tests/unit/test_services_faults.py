"""Deliberate faults of the reference pipeline: switches, what each does to rows and pages (services/faults.py)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from services.common import ConfigError
from services.faults import (
    DELETE_KEY,
    DROP_KEY,
    DUPLICATE_KEY,
    MAX_DECIMAL,
    RETRACT_KEY,
    REWRITE_KEY,
    ApiFaults,
    ConsumerFaults,
    LateChanges,
    LateKind,
    Retractions,
    hash_fraction,
    kept,
    picked,
    round_price,
    shift_ms,
    through_float64,
    wrong_price,
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
    late = LateChanges(faults)
    late.committed(batch, now=0.0)
    assert len(late) == 0 and late.due(1e9) == []
    api = ApiFaults.from_env(10_000, env={})
    assert api == ApiFaults()
    assert api.warnings() == []
    assert api.order_by() == "ORDER BY src.trade_time DESC, src.trade_id DESC"
    assert (api.page_size(5000), api.end_time(1234)) == (5000, 1234)
    answer = [{"trade_id": i} for i in range(100)]
    retractions = Retractions.of(api)
    assert retractions.fetch_size("BTCUSDT", 50) == 50
    assert retractions.shown("BTCUSDT", answer, 100, now=0.0) == answer


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
    assert api.order_by() == "ORDER BY src.trade_time ASC, src.trade_id ASC"
    assert (api.page_size(5000), api.page_size(40)) == (100, 40)
    assert ApiFaults(price_order=True).order_by() == "ORDER BY src.price DESC, src.trade_id DESC"
    assert ApiFaults(ignore_end_time=True).end_time(1234) is None


# ---------------------------------------------------------------- switches added for row lifecycles


def test_lifecycle_switches_are_read_with_their_delays_and_warned_about() -> None:
    env = {
        "UNSAFE_KEEP_EVERY_N": "5",
        "UNSAFE_REWRITE_FRACTION": "0.2",
        "UNSAFE_REWRITE_AFTER_MS": "1500",
        "UNSAFE_DELETE_FRACTION": "0.1",
        "UNSAFE_DELETE_AFTER_MS": "0",
        "UNSAFE_RESTORE_AFTER_MS": "4000",
    }
    faults = ConsumerFaults.from_env(3, env=env)
    assert faults == ConsumerFaults(
        keep_every_n=5,
        rewrite_fraction=0.2,
        rewrite_after_ms=1500,
        delete_fraction=0.1,
        delete_after_ms=0,
        restore_after_ms=4000,
    )
    warned = faults.warnings()
    assert [line.split("=", 1)[0] for line in warned] == [
        "UNSAFE_KEEP_EVERY_N",
        "UNSAFE_REWRITE_FRACTION",
        "UNSAFE_DELETE_FRACTION",
    ]
    assert "1500 ms later" in warned[1] and "0 ms later and appended again 4000 ms after that" in warned[2]
    defaults = ConsumerFaults.from_env(3, env={"UNSAFE_REWRITE_FRACTION": "1", "UNSAFE_DELETE_FRACTION": "1"})
    assert (defaults.rewrite_after_ms, defaults.delete_after_ms, defaults.restore_after_ms) == (2000, 2000, 3000)
    api_env = {
        "UNSAFE_API_PRICE_ORDER": "1",
        "UNSAFE_API_IGNORE_END_TIME": "yes",
        "UNSAFE_API_RETRACT_FRACTION": "0.25",
        "UNSAFE_API_RETRACT_AFTER_MS": "500",
    }
    api = ApiFaults.from_env(10_000, env=api_env)
    assert api == ApiFaults(price_order=True, ignore_end_time=True, retract_fraction=0.25, retract_after_ms=500)
    assert [line.split("=", 1)[0] for line in api.warnings()] == [
        "UNSAFE_API_PRICE_ORDER",
        "UNSAFE_API_IGNORE_END_TIME",
        "UNSAFE_API_RETRACT_FRACTION",
    ]
    assert ApiFaults.from_env(10_000, env={"UNSAFE_API_RETRACT_FRACTION": "1"}).retract_after_ms == 2000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UNSAFE_KEEP_EVERY_N": "1"}, "UNSAFE_KEEP_EVERY_N='1' (env): must be >= 2"),
        ({"UNSAFE_KEEP_EVERY_N": "fifth"}, "UNSAFE_KEEP_EVERY_N='fifth' (env): must be an integer"),
        ({"UNSAFE_REWRITE_FRACTION": "2"}, "UNSAFE_REWRITE_FRACTION='2' (env): must be between 0 and 1"),
        (
            {"UNSAFE_REWRITE_FRACTION": "0.1", "UNSAFE_REWRITE_AFTER_MS": "-5"},
            "UNSAFE_REWRITE_AFTER_MS='-5' (env): must be >= 0",
        ),
        (
            {"UNSAFE_REWRITE_AFTER_MS": "1000"},
            "UNSAFE_REWRITE_AFTER_MS='1000' (env): has no effect without UNSAFE_REWRITE_FRACTION; "
            "set UNSAFE_REWRITE_FRACTION too, or unset UNSAFE_REWRITE_AFTER_MS",
        ),
        ({"UNSAFE_RESTORE_AFTER_MS": "1000"}, "UNSAFE_RESTORE_AFTER_MS='1000' (env): has no effect without"),
        (
            {"UNSAFE_DELETE_FRACTION": "0.1", "UNSAFE_DELETE_AFTER_MS": "600001"},
            "UNSAFE_DELETE_AFTER_MS='600001' (env): must be <= 600000",
        ),
    ],
)
def test_a_bad_lifecycle_switch_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ConsumerFaults.from_env(3, env=env)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"UNSAFE_API_PRICE_ORDER": "1", "UNSAFE_API_OLDEST_FIRST": "1"},
            "UNSAFE_API_PRICE_ORDER='1' (env): orders pages by price, UNSAFE_API_OLDEST_FIRST=1 by time",
        ),
        ({"UNSAFE_API_IGNORE_END_TIME": "often"}, "UNSAFE_API_IGNORE_END_TIME='often' (env): must be a boolean"),
        ({"UNSAFE_API_RETRACT_FRACTION": "-0.1"}, "UNSAFE_API_RETRACT_FRACTION='-0.1' (env): must be between 0 and 1"),
        ({"UNSAFE_API_RETRACT_AFTER_MS": "100"}, "has no effect without UNSAFE_API_RETRACT_FRACTION"),
    ],
)
def test_a_bad_api_switch_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        ApiFaults.from_env(10_000, env=env)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_keep_every_n_keeps_one_id_in_each_block_of_n_at_no_fixed_stride() -> None:
    ids = range(10**9, 10**9 + 10_000)  # 10**9 is a multiple of 5: 2,000 whole blocks
    first = [i for i in ids if kept(i, 5)]
    assert len(first) == 2000
    assert all(len([i for i in ids[b : b + 5] if kept(i, 5)]) == 1 for b in range(0, 10_000, 5))
    assert first == [i for i in ids if kept(i, 5)]  # the same every time
    # which of the five varies: a sender spreading ids round robin over 5 symbols loses from each of them
    assert set(Counter(i % 5 for i in first).values()) != {2000} and len(Counter(i % 5 for i in first)) == 5
    for start in (0, 1, 3, 2**62 + 7):  # any 100 consecutive ids: 20 kept, give or take the two cut blocks
        assert 19 <= sum(kept(i, 5) for i in range(start, start + 100)) <= 21


def test_keep_every_n_writes_only_the_kept_trades_unchanged() -> None:
    batch = rows(1000)
    written = ConsumerFaults(keep_every_n=5).apply(batch)
    assert written == [r for r in batch if kept(r.trade.trade_id, 5)]
    assert len(written) == 200  # ids 10**9 .. 10**9 + 999: 200 whole blocks


def test_a_wrong_price_is_one_unit_off_and_fits_the_column() -> None:
    assert wrong_price(Decimal("65000.12345678")) == Decimal("65001.12345678")
    assert wrong_price(MAX_DECIMAL) == Decimal("9999999998.99999999")


def test_committed_rows_are_rewritten_then_deleted_and_restored_when_due() -> None:
    batch = rows(2000)
    faults = ConsumerFaults(rewrite_fraction=0.1, delete_fraction=0.05, delete_after_ms=1000, restore_after_ms=3000)
    late = LateChanges(faults)
    late.committed(batch, now=100.0)
    assert len(late) == 2
    assert late.due(100.999) == []  # deletes are due 1 s after the commit, rewrites 2 s after
    (delete,) = late.due(101.0)
    assert delete.kind is LateKind.DELETE
    assert list(delete.rows) == [r for r in batch if picked(r.trade.trade_id, 0.05, DELETE_KEY)]
    assert 60 <= len(delete.rows) <= 140
    (rewrite,) = late.due(102.0)
    assert rewrite.kind is LateKind.REWRITE
    originals = {r.trade.trade_id: r for r in batch if picked(r.trade.trade_id, 0.1, REWRITE_KEY)}
    assert [r.trade.trade_id for r in rewrite.rows] == list(originals)
    for changed in rewrite.rows:  # the same trade but for its price
        before = originals[changed.trade.trade_id]
        assert changed.trade.price == before.trade.price + 1
        assert (changed.trade.symbol, changed.trade.trade_time_ms, changed.offset, changed.partition) == (
            before.trade.symbol,
            before.trade.trade_time_ms,
            before.offset,
            before.partition,
        )
    assert len(late) == 2  # handed out, not yet in the table: still to be made
    late.done(rewrite, now=102.5)
    assert len(late) == 1  # a rewrite is final
    late.done(delete, now=102.5)  # the delete committed: its restore is due 3 s later
    assert len(late) == 1 and late.due(105.4) == []
    (restore,) = late.due(105.5)
    assert restore.kind is LateKind.RESTORE and restore.rows == delete.rows
    late.done(restore, now=105.6)
    assert len(late) == 0


def test_a_delete_given_up_schedules_no_restore() -> None:
    late = LateChanges(ConsumerFaults(delete_fraction=1.0, delete_after_ms=0))
    late.committed(rows(5), now=0.0)
    (delete,) = late.due(0.0)
    late.done(delete, now=0.1, applied=False)
    assert len(late) == 0 and late.due(1e9) == []


def test_late_changes_fall_due_in_order_whatever_order_they_were_scheduled_in() -> None:
    late = LateChanges(ConsumerFaults(rewrite_fraction=1.0, rewrite_after_ms=500))
    late.committed(rows(3), now=10.0)
    late.committed(rows(2), now=9.0)
    due = late.due(11.0)
    assert [len(c.rows) for c in due] == [2, 3]


def answer(ids: range) -> list[dict[str, Any]]:
    return [{"trade_id": i, "price": "1.00000000"} for i in ids]


def test_retracted_rows_are_shown_until_the_delay_after_their_first_answer_then_never() -> None:
    retractions = Retractions(fraction=0.2, after_ms=2000)
    ids = range(10**9, 10**9 + 1000)
    doomed = {i for i in ids if picked(i, 0.2, RETRACT_KEY)}
    assert 150 <= len(doomed) <= 250
    assert retractions.shown("BTCUSDT", answer(ids), 1000, now=50.0) == answer(ids)
    assert retractions.shown("BTCUSDT", answer(ids), 1000, now=52.0) == answer(ids)  # not past the delay yet
    later = retractions.shown("BTCUSDT", answer(ids), 1000, now=52.001)
    assert [r["trade_id"] for r in later] == [i for i in ids if i not in doomed]
    # another symbol's trades (here with the same ids) have their own first answers
    assert retractions.shown("ETHUSDT", answer(ids), 1000, now=60.0) == answer(ids)
    # a page is read with room for the hidden rows, then cut to its size
    assert retractions.fetch_size("BTCUSDT", 100) == 100 + len(doomed)
    assert retractions.shown("BTCUSDT", answer(ids), 100, now=70.0) == later[:100]


def test_only_rows_an_answer_really_showed_start_their_retraction_clock() -> None:
    retractions = Retractions(fraction=1.0, after_ms=1000)
    ids = range(1, 11)
    assert retractions.shown("BTCUSDT", answer(ids), 5, now=0.0) == answer(range(1, 6))
    # rows 6-10 were cut from that page: first shown now, so shown until 1 s from now
    assert retractions.shown("BTCUSDT", answer(range(6, 11)), 5, now=5.0) == answer(range(6, 11))
    assert retractions.shown("BTCUSDT", answer(ids), 10, now=5.5) == answer(range(6, 11))
    assert retractions.shown("BTCUSDT", answer(ids), 10, now=6.5) == []
