"""Sessions' stream index and the routing of trades over subscribed symbols."""

from __future__ import annotations

from pipeline_check.backends.websocket.dialect import Session
from pipeline_check.backends.websocket.routing import SymbolSpreader
from pipeline_check.canary.trades import Trade

TRADE = Trade("BTCUSDT", 1_000_000_001, "65000.00000000", "0.10000000", False, 1_750_000_000_000)


def test_session_indexes_streams_by_the_symbol_they_carry():
    session = Session("/ws")
    session.follow("btcusdt@trade", "BTCUSDT")
    session.follow("btcusdt@aggTrade", "BTCUSDT")
    session.follow("btcusdt@depth", None)
    session.follow("btcusdt@trade", "BTCUSDT")  # twice is once
    assert session.streams_of("BTCUSDT") == ["btcusdt@trade", "btcusdt@aggTrade"]
    assert session.drop("btcusdt@trade") and not session.drop("btcusdt@trade")
    assert session.symbols() == {"BTCUSDT"}
    assert session.drop("btcusdt@aggTrade")
    assert session.symbols() == frozenset() and session.streams_of("BTCUSDT") == ()
    assert list(session.streams) == ["btcusdt@depth"]


def test_spreader_deals_the_subscribed_symbols_in_turn():
    subscribed = frozenset({"ETHUSDT", "BTCUSDT", "SOLUSDT"})
    spreader = SymbolSpreader(lambda: subscribed)
    assert [spreader.route(TRADE).symbol for _ in range(6)] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"] * 2


def test_spreader_follows_subscription_changes():
    current = [frozenset({"BTCUSDT"})]
    spreader = SymbolSpreader(lambda: current[0])
    assert spreader.route(TRADE).symbol == "BTCUSDT"
    current[0] = frozenset({"ETHUSDT"})
    assert spreader.route(TRADE).symbol == "ETHUSDT"


def test_spreader_keeps_the_trade_while_nothing_is_subscribed():
    spreader = SymbolSpreader(frozenset)
    assert spreader.route(TRADE) is TRADE


def test_spreader_changes_only_the_symbol():
    routed = SymbolSpreader(lambda: frozenset({"ETHUSDT"})).route(TRADE)
    assert routed.symbol == "ETHUSDT"
    assert (routed.trade_id, routed.price, routed.quantity, routed.time_ms) == (
        TRADE.trade_id,
        TRADE.price,
        TRADE.quantity,
        TRADE.time_ms,
    )


def test_a_followed_symbol_is_its_own_carrier():
    spreader = SymbolSpreader(lambda: frozenset({"BTCUSDT", "CANARYUSDT"}))
    assert [spreader.carrier("CANARYUSDT") for _ in range(3)] == ["CANARYUSDT"] * 3


def test_a_symbol_nobody_follows_is_carried_by_the_subscribed_ones_in_turn():
    spreader = SymbolSpreader(lambda: frozenset({"ETHUSDT", "BTCUSDT"}))
    assert [spreader.carrier("CANARYUSDT") for _ in range(4)] == ["BTCUSDT", "ETHUSDT"] * 2


def test_nothing_carries_while_nothing_is_subscribed():
    spreader = SymbolSpreader(frozenset)
    assert spreader.carrier("CANARYUSDT") is None
    assert spreader.next() is None
