from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pipeline_check.canary.fidelity import COMPARISONS, compare, parse_spec
from pipeline_check.canary.trades import decimal_text

MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z
AT = dt.datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("how", "sent", "held", "same"),
    [
        ("decimal", "65000.10", "65000.10000000", True),
        ("decimal", "65000.10000000", Decimal("65000.1"), True),
        ("decimal", "0.1", "0.10000001", False),
        ("decimal", "0.00000001", "1E-8", True),
        ("decimal", "1.5", "abc", False),
        ("decimal", "1.5", None, False),
        ("side", True, "sell", True),
        ("side", True, "SELL", True),
        ("side", False, "buy", True),
        ("side", True, "buy", False),
        ("side", "true", "sell", False),  # only a real boolean says who was the maker
        ("ms", MS, AT, True),
        ("ms", MS, AT.replace(tzinfo=None), True),  # naive means UTC
        ("ms", MS, AT.astimezone(dt.timezone(dt.timedelta(hours=2))), True),
        ("ms", MS, "2023-11-14T22:13:20.123Z", True),
        ("ms", MS, "2023-11-14T23:13:20.123+01:00", True),
        ("ms", MS, MS, True),
        ("ms", MS, str(MS), True),
        ("ms", MS, MS + 1, False),
        ("ms", MS, AT + dt.timedelta(milliseconds=1), False),
        ("ms", MS, "yesterday", False),
        ("ms", MS, None, False),
        ("ms", MS, True, False),
        ("exact", "BTCUSDT", "BTCUSDT", True),
        ("exact", 5, "5", True),
        ("exact", "BTCUSDT", "btcusdt", False),
    ],
)
def test_comparisons(how: str, sent: object, held: object, same: bool) -> None:
    assert COMPARISONS[how](sent, held) is same


SENT = {"s": "CANARYUSDT", "p": decimal_text(6_500_010_000_000), "q": "0.00100000", "m": True, "T": MS}
FIELDS = {"symbol": "s", "price": "p:decimal", "quantity": "q:decimal", "side": "m:side", "trade_time": "T:ms"}
HELD = {"symbol": "CANARYUSDT", "price": "65000.1", "quantity": Decimal("0.001"), "side": "sell", "trade_time": AT}


@pytest.mark.parametrize(
    ("changes", "diffs"),
    [
        ({}, []),
        ({"price": "65000.10000001"}, [("price", "'65000.10000000'", "'65000.10000001'")]),
        ({"side": "buy"}, [("side", "True", "'buy'")]),
        (
            {"trade_time": AT.replace(microsecond=124_000)},
            [("trade_time", repr(MS), repr(AT.replace(microsecond=124_000)))],
        ),
        (
            {"symbol": "BTCUSDT", "quantity": "0.01"},
            [("symbol", "'CANARYUSDT'", "'BTCUSDT'"), ("quantity", "'0.00100000'", "'0.01'")],
        ),
    ],
)
def test_compare(changes: dict[str, object], diffs: list[tuple[str, str, str]]) -> None:
    assert list(compare(SENT, HELD | changes, FIELDS)) == diffs


def test_missing_field() -> None:
    held = {k: v for k, v in HELD.items() if k != "price"}
    assert list(compare(SENT, held, FIELDS)) == [("price", "'65000.10000000'", "<missing>")]


def test_missing_sent_field_never_matches() -> None:
    assert list(compare(SENT, {"x": "1"}, {"x": "nope:decimal"})) == [("x", "None", "'1'")]


def test_epoch_ms_as_a_float_compares_as_a_number() -> None:
    assert not list(compare(SENT, {"t": float(SENT["T"])}, {"t": "T:ms"}))  # type: ignore[arg-type]
    assert list(compare(SENT, {"t": float(SENT["T"]) + 1}, {"t": "T:ms"}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("p:decimal", ("p", "decimal")), ("s", ("s", "exact")), ("s:", ("s", "exact")), ("T:ms", ("T", "ms"))],
)
def test_parse_spec(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["p:fuzzy", ":decimal", "", "p:Decimal"])
def test_bad_spec(spec: str) -> None:
    with pytest.raises(ValueError, match=r"is not a comparison \(exact, decimal, side, ms, time\)|names no sent field"):
        parse_spec(spec)
