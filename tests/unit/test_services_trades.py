"""The consumer's pure logic: validation, normalisation, DLQ envelope, batching (compose/services/trades.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pytest
from services.iceberg import TRADES_ARROW_SCHEMA
from services.trades import (
    BatchBuffer,
    InvalidRecord,
    PositionGuard,
    StallWatch,
    clamp_offset,
    parse_decimal,
    parse_trade,
    resume_offset,
    to_arrow,
)

TOPIC = "market.trades.raw"


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "e": "trade",
        "E": 1_700_000_000_123,
        "s": "BTCUSDT",
        "t": 42,
        "p": "65000.10",
        "q": "0.00100000",
        "T": 1_700_000_000_120,
        "m": True,
        "M": True,
    }
    base.update(changes)
    return base


def raw(**changes: object) -> bytes:
    return json.dumps(event(**changes)).encode()


def without(key: str) -> bytes:
    ev = event()
    del ev[key]
    return json.dumps(ev).encode()


# ---------------------------------------------------------------- validation


def test_valid_trade_is_normalised() -> None:
    trade = parse_trade(raw())
    assert trade.symbol == "BTCUSDT"
    assert trade.trade_id == 42
    assert trade.price == Decimal("65000.10")
    assert trade.quantity == Decimal("0.001")
    assert trade.event_time_ms == 1_700_000_000_123
    assert trade.trade_time_ms == 1_700_000_000_120


@pytest.mark.parametrize(("maker", "side"), [(True, "sell"), (False, "buy")])
def test_side_is_the_aggressor(maker: bool, side: str) -> None:
    # m = buyer is the maker, so the aggressor (taker) sold
    assert parse_trade(raw(m=maker)).side == side


def test_extra_fields_are_ignored() -> None:
    assert parse_trade(raw(x="tag-1")).trade_id == 42


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\xfe", "not UTF-8"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (raw(e="aggTrade"), "e:"),
        (raw(s="btcusdt"), "s:"),
        (raw(s="B"), "s:"),
        (raw(s="BTC-USDT"), "s:"),
        (without("s"), "s:"),
        (raw(t=-1), "t=-1"),
        (raw(t=2**63), "t="),
        (raw(t=1.5), "t: must be an integer"),
        (raw(t="42"), "t: must be an integer"),
        (raw(t=True), "t: must be an integer"),
        (without("t"), "t:"),
        (raw(E="1700000000000"), "E:"),
        (raw(T=None), "T:"),
        (raw(p=65000.1), "p: must be a decimal string"),
        (raw(p="0"), "must be > 0"),
        (raw(p="0.00000000"), "must be > 0"),
        (raw(p="-1.5"), "not a plain decimal"),
        (raw(p="1e5"), "not a plain decimal"),
        (raw(p=" 1.5"), "not a plain decimal"),
        (raw(p="1."), "not a plain decimal"),
        (raw(p="NaN"), "not a plain decimal"),
        (raw(p="\u0661.5"), "not a plain decimal"),  # Arabic-Indic digit one
        (raw(q="0.000000001"), "more than 8 fractional digits"),
        (raw(q="1.123456789"), "more than 8 fractional digits"),
        (raw(p="12345678901.5"), "too large"),
        (raw(p="1" * 70), "longer than"),
        (raw(m="true"), "m: must be a boolean"),
        (raw(M=1), "M: must be a boolean"),
        (without("M"), "M:"),
    ],
)
def test_invalid_records_are_rejected_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=None) as exc:
        parse_trade(value)
    assert reason in str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65000.10", Decimal("65000.10")),
        ("0.00000001", Decimal("0.00000001")),
        ("9999999999.99999999", Decimal("9999999999.99999999")),
        ("0009999999999.5", Decimal("9999999999.5")),  # leading zeros do not count
        ("1.000000000000", Decimal("1")),  # trailing zeros fit exactly: nothing is rounded
        ("7", Decimal("7")),
    ],
)
def test_decimals_that_fit_exactly_are_accepted(text: str, expected: Decimal) -> None:
    assert parse_decimal("p", text) == expected


# ---------------------------------------------------------------- batching


def test_buffer_routes_valid_rows_and_dlq_records_and_tracks_next_offsets() -> None:
    buf = BatchBuffer()
    assert buf.empty
    assert buf.add(TOPIC, 0, 10, 1_700_000_000_999, b"BTCUSDT", raw(t=1)) is None
    reason = buf.add(TOPIC, 0, 11, 1_700_000_001_000, None, b"garbage")
    assert reason is not None and "not JSON" in reason
    assert buf.add(TOPIC, 2, 5, -1, b"BTCUSDT", raw(t=2)) is None
    assert len(buf) == 2 and not buf.empty

    batch = buf.take()
    assert buf.empty and len(buf) == 0
    assert batch.offsets == {(TOPIC, 0): 12, (TOPIC, 2): 6}
    assert [r.trade.trade_id for r in batch.rows] == [1, 2]
    assert batch.rows[0].ingest_time_ms == 1_700_000_000_999
    assert batch.rows[1].ingest_time_ms is None  # no record timestamp
    assert len(batch.dlq) == 1
    envelope = json.loads(batch.dlq[0].value)
    assert envelope == {
        "reason": reason,
        "topic": TOPIC,
        "partition": 0,
        "offset": 11,
        "key": None,
        "value": "garbage",
    }


def test_dlq_only_batch_is_not_empty() -> None:
    # its offsets must still be committed, after the DLQ produce
    buf = BatchBuffer()
    buf.add(TOPIC, 1, 0, 0, None, b"{}")
    batch = buf.take()
    assert not batch.empty and not batch.rows and batch.offsets == {(TOPIC, 1): 1}


def test_restore_puts_a_failed_batch_in_front_of_newer_records() -> None:
    buf = BatchBuffer()
    buf.add(TOPIC, 0, 0, 0, None, raw(t=1))
    failed = buf.take()
    buf.add(TOPIC, 0, 1, 0, None, raw(t=2))
    buf.add(TOPIC, 1, 7, 0, None, raw(t=3))
    buf.restore(failed)
    batch = buf.take()
    assert [r.trade.trade_id for r in batch.rows] == [1, 2, 3]
    assert batch.offsets == {(TOPIC, 0): 2, (TOPIC, 1): 8}


def test_drop_partitions_forgets_their_rows_and_offsets() -> None:
    buf = BatchBuffer()
    buf.add(TOPIC, 0, 0, 0, None, raw(t=1))
    buf.add(TOPIC, 1, 0, 0, None, raw(t=2))
    assert buf.drop_partitions({(TOPIC, 1)}) == 1
    batch = buf.take()
    assert [r.partition for r in batch.rows] == [0]
    assert batch.offsets == {(TOPIC, 0): 1}


def test_arrow_batch_is_sorted_by_trade_id_with_exact_types() -> None:
    buf = BatchBuffer()
    for offset, tid in enumerate([30, 10, 20]):
        buf.add(TOPIC, 0, offset, 1_700_000_000_500, b"BTCUSDT", raw(t=tid, p="0.00000001", m=False))
    table = to_arrow(buf.take().rows, TRADES_ARROW_SCHEMA)
    assert table.schema == TRADES_ARROW_SCHEMA
    assert table.column("trade_id").to_pylist() == [10, 20, 30]
    assert table.column("kafka_offset").to_pylist() == [1, 2, 0]
    assert table.schema.field("price").type == pa.decimal128(18, 8)
    assert table.column("price").to_pylist()[0] == Decimal("0.00000001")
    assert table.column("side").to_pylist() == ["buy"] * 3
    assert table.column("event_time").cast(pa.int64()).to_pylist()[0] == 1_700_000_000_123_000
    assert table.column("ingest_time").cast(pa.int64()).to_pylist()[0] == 1_700_000_000_500_000


# ---------------------------------------------------------------- offsets


def test_guard_drops_records_until_the_partition_is_positioned() -> None:
    guard = PositionGuard()
    assert not guard.accept(TOPIC, 0, 5)  # fetched from the committed offset before the seek
    guard.position(TOPIC, 0, 8)
    assert not guard.accept(TOPIC, 0, 7)  # already in the table
    assert guard.accept(TOPIC, 0, 8)
    assert not guard.accept(TOPIC, 0, 8)  # a re-fetch after the seek
    assert guard.accept(TOPIC, 0, 10)  # gaps (e.g. control records) move forward
    guard.forget(TOPIC, 0)
    assert not guard.accept(TOPIC, 0, 11)


P0, P1 = (TOPIC, 0), (TOPIC, 1)


def test_a_partition_stalls_when_records_wait_and_none_is_taken_in() -> None:
    watch = StallWatch(after=20.0)
    # the client's position may sit at the log end while records it never handed over wait: what counts
    # is the offset taken in (the guard's), not the position
    assert watch.check({P0: 100}, {P0: 160}, now=0.0) == []
    assert watch.check({P0: 100}, {P0: 170}, now=19.9) == []
    assert watch.check({P0: 100}, {P0: 180}, now=20.0) == [P0]
    # progress starts the count again
    assert watch.check({P0: 120}, {P0: 180}, now=25.0) == []
    assert watch.check({P0: 120}, {P0: 180}, now=44.0) == []
    assert watch.check({P0: 120}, {P0: 180}, now=45.0) == [P0]


def test_an_idle_partition_never_stalls_and_its_first_records_are_given_time() -> None:
    watch = StallWatch(after=20.0)
    for now in range(0, 300, 5):  # nothing produced for minutes
        assert watch.check({P0: 100, P1: 7}, {P0: 100, P1: 7}, now=float(now)) == []
    # records arrive after the idle stretch: not a stall until they have waited 20 s
    assert watch.check({P0: 100, P1: 7}, {P0: 130, P1: 7}, now=300.0) == []
    assert watch.check({P0: 100, P1: 7}, {P0: 130, P1: 7}, now=315.0) == []
    assert watch.check({P0: 100, P1: 7}, {P0: 130, P1: 7}, now=320.0) == [P0]


def test_a_client_that_does_not_answer_counts_as_not_moving_and_reset_forgets() -> None:
    watch = StallWatch(after=20.0)
    assert watch.check({P0: 100}, None, now=0.0) == []
    assert watch.check({P0: 100}, None, now=20.0) == [P0]
    watch.reset()  # new clients
    assert watch.check({P0: 100}, None, now=21.0) == []
    # a partition no longer ours is forgotten
    assert watch.check({P1: 5}, {P1: 9}, now=22.0) == []
    assert watch.check({P0: 100, P1: 5}, {P0: 200, P1: 9}, now=45.0) == [P1]


@pytest.mark.parametrize(
    ("snapshot", "committed", "unsafe", "expected"),
    [
        (None, None, False, None),  # nothing known: auto_offset_reset=earliest
        (100, None, False, 100),
        (None, 40, False, 40),
        (100, 60, False, 100),  # killed between the Iceberg and the Kafka commit
        (100, 130, False, 130),  # DLQ-only flushes commit without a snapshot
        (100, 60, True, 60),  # the unsafe knob ignores the snapshot: rows are written again
        (100, None, True, None),
    ],
)
def test_resume_offset(snapshot: int | None, committed: int | None, unsafe: bool, expected: int | None) -> None:
    assert resume_offset(snapshot, committed, unsafe=unsafe) == expected


@pytest.mark.parametrize(
    ("target", "begin", "end", "expected", "warns"),
    [
        (None, 3, 10, 3, False),  # nothing known: the oldest record
        (7, 3, 10, 7, False),
        (10, 3, 10, 10, False),  # caught up
        (50, 0, 10, 0, True),  # the topic was recreated under the table: its records are all new
        (1, 3, 10, 3, True),  # retention deleted records never written
    ],
)
def test_clamp_offset(target: int | None, begin: int, end: int, expected: int, warns: bool) -> None:
    offset, warning = clamp_offset(target, begin, end)
    assert offset == expected
    assert (warning is not None) is warns
