from __future__ import annotations

import json

import pytest

from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import Trade, TradeFactory


def _reference(trade: Trade) -> str:
    return json.dumps(trade.to_dict(), separators=(",", ":"))


def test_to_json_is_the_compact_json_of_to_dict() -> None:
    run = RunId.new(now=1_750_000_000.0)
    factory = TradeFactory(run, seed=3, count=500, symbols=("CANARYUSDT",))
    trades = [factory.canary(seq, 1_750_000_000_000 + seq) for seq in range(500)]
    trades += [factory.background(1_750_000_000_000 + i) for i in range(500)]
    for trade in trades:
        assert trade.to_json() == _reference(trade)
        assert json.loads(trade.to_json()) == trade.to_dict()


@pytest.mark.parametrize("symbol", ['BT"C', "BT\\C", "BTC\n", "BTCé", "BTC\u2028"])
def test_to_json_escapes_like_json_dumps(symbol: str) -> None:
    trade = Trade(symbol, 7, "1.00000000", "2.00000000", False, 1)
    assert trade.to_json() == _reference(trade)
    assert json.loads(trade.to_json())["s"] == symbol


def test_canary_values_use_every_digit_of_the_declared_decimal() -> None:
    factory = TradeFactory(RunId(9), seed=5, count=64, symbols=("A", "B", "C"))
    canaries = [factory.canary(seq, 0) for seq in range(64)]
    assert canaries[0].price == canaries[16].price == "9999999999.99999999"  # decimal(18,8) at its largest
    assert canaries[1].quantity == "0.00000001"  # and its smallest positive value
    ordinary = [c for seq, c in enumerate(canaries) if seq % 16 > 1]
    assert all(len(c.price.replace(".", "")) == 18 and not c.price.endswith("0") for c in ordinary)
    # a pipeline that passes prices through float64 changes every one of them: caught by the fidelity diff
    assert all(repr(float(c.price)) != c.price for c in ordinary)
    assert [c.symbol for c in canaries[:4]] == ["A", "B", "C", "A"]
    assert [c.seq for c in canaries[:3]] == [0, 1, 2]


def test_a_smaller_declared_type_keeps_its_own_digits() -> None:
    factory = TradeFactory(RunId(9), seed=5, count=3, symbols=("A",), precision=10, scale=2)
    assert factory.canary(0, 0).price == "99999999.99"
    assert factory.canary(1, 0).price == "0.01"
    assert len(factory.canary(2, 0).price.replace(".", "")) == 10


@pytest.mark.parametrize(("precision", "scale", "top"), [(18, 8, "9999999999.99999999"), (10, 2, "99999999.99"),
                                                          (6, 4, "99.9999"), (4, 0, "9999")])  # fmt: skip
def test_background_trades_are_in_the_canaries_decimal_type(precision: int, scale: int, top: str) -> None:
    factory = TradeFactory(RunId(9), seed=5, count=3, symbols=("A",), precision=precision, scale=scale)
    trades = [factory.background(0) for _ in range(2000)]
    for value in [t.price for t in trades] + [t.quantity for t in trades]:
        whole, _, decimals = value.partition(".")
        assert len(decimals) == scale and len((whole + decimals).lstrip("0")) <= precision, value
        assert 0 < float(value) <= float(top), value
    assert len({t.price for t in trades}) > 20  # the price still walks


def test_background_trades_at_the_default_type_are_unchanged() -> None:
    factory = TradeFactory(RunId(9), seed=5, count=3, symbols=("A",))
    first = factory.background(0)
    assert (first.price, first.quantity) == ("64999.97236483", "1.16067936")  # as before scale applied
