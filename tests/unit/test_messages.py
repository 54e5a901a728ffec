from __future__ import annotations

import json

import pytest

from pipeline_check.messages import Trade, TradeFactory
from pipeline_check.tags import RunId


def _reference(trade: Trade) -> str:
    return json.dumps(trade.to_dict(), separators=(",", ":"))


def test_to_json_is_the_compact_json_of_to_dict() -> None:
    run = RunId.new(now=1_750_000_000.0)
    factory = TradeFactory(run, seed=3, count=500, symbol="CANARYUSDT")
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
