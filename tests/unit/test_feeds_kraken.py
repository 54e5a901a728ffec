"""The Kraken v2 dialect's frames and trade messages, without sockets."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from pipeline_check.backends.websocket.dialect import PathRejected, Session
from pipeline_check.backends.websocket.kraken import KrakenDialect, json_number, pair_of, symbol_of
from pipeline_check.canary.fidelity import compare
from pipeline_check.canary.trades import Trade

NOW = dt.datetime(2025, 6, 15, 12, 0, 0, 742599, tzinfo=dt.UTC)
STAMP = "2025-06-15T12:00:00.742599Z"
TAG = 2**62 | 5 << 26 | 17
CANARY = Trade("CANARYUSDT", TAG, "65000.10000000", "0.00100000", True, 1_750_000_000_123)


def ask(session: Session, request: Any, history: Mapping[str, Sequence[Trade]] | None = None) -> list[dict[str, Any]]:
    frame = request if isinstance(request, str) else json.dumps(request)
    return [json.loads(reply) for reply in KrakenDialect().handle(session, frame, NOW, history or {})]


def subscribe(*pairs: str, **params: Any) -> dict[str, Any]:
    return {"method": "subscribe", "params": {"channel": "trade", "symbol": list(pairs), **params}, "req_id": 1}


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [("BTCUSDT", "BTC/USDT"), ("BTCUSD", "BTC/USD"), ("CANARYUSDT", "CANARY/USDT"), ("ETHBTC", "ETH/BTC")],
)
def test_symbols_map_both_ways(symbol: str, pair: str):
    assert pair_of(symbol) == pair
    assert symbol_of(pair) == symbol


def test_a_symbol_without_a_known_quote_is_refused():
    with pytest.raises(ValueError, match="no known quote"):
        pair_of("USDT")


@pytest.mark.parametrize("text", ["65000.10000000", "0.5147", "-1", "6423", "1.5e-7"])
def test_decimal_text_is_kept_digit_for_digit(text: str):
    assert json_number(text) == text


@pytest.mark.parametrize("text", [".5", "1.", "01", "NaN", "1,5", ""])
def test_text_that_is_no_json_number_is_refused(text: str):
    with pytest.raises(ValueError, match="not a JSON number"):
        json_number(text)


def test_only_the_v2_path_is_served():
    assert KrakenDialect().connect("/v2").streams == {}
    with pytest.raises(PathRejected) as rejected:
        KrakenDialect().connect("/")
    assert rejected.value.status == 404


def test_connection_opens_with_a_status_update():
    (status,) = (json.loads(f) for f in KrakenDialect().greet(Session("/v2"), NOW))
    assert status["channel"] == "status" and status["type"] == "update"
    assert status["data"][0]["api_version"] == "v2" and status["data"][0]["system"] == "online"


def test_subscribe_is_acknowledged_per_symbol():
    session = Session("/v2")
    acks = ask(session, subscribe("BTC/USD", "CANARY/USDT"))
    assert acks == [
        {
            "method": "subscribe",
            "req_id": 1,
            "result": {"channel": "trade", "symbol": pair, "snapshot": False},
            "success": True,
            "time_in": STAMP,
            "time_out": STAMP,
        }
        for pair in ("BTC/USD", "CANARY/USDT")
    ]
    assert session.symbols() == {"BTCUSD", "CANARYUSDT"}


def test_snapshot_sends_the_recent_trades_after_the_ack():
    session = Session("/v2")
    old = Trade("BTCUSD", 41, "100.5", "2", False, 1_750_000_000_000)
    ack, snapshot = ask(session, subscribe("BTC/USD", snapshot=True), {"BTCUSD": [old]})
    assert ack["result"]["snapshot"] is True
    assert snapshot["channel"] == "trade" and snapshot["type"] == "snapshot"
    assert [entry["trade_id"] for entry in snapshot["data"]] == [41]


def test_an_unknown_pair_is_refused_and_the_others_subscribed():
    session = Session("/v2")
    ok, refused = ask(session, subscribe("ETH/USD", "xbt-eur"))
    assert ok["success"] is True
    assert refused == {
        "method": "subscribe",
        "req_id": 1,
        "error": "Currency pair not supported xbt-eur",
        "success": False,
        "symbol": "xbt-eur",
        "time_in": STAMP,
        "time_out": STAMP,
    }
    assert session.symbols() == {"ETHUSD"}


def test_unsubscribe_drops_the_stream_and_refuses_one_not_followed():
    session = Session("/v2")
    ask(session, subscribe("BTC/USD"))
    request = subscribe("BTC/USD") | {"method": "unsubscribe"}
    (done,) = ask(session, request)
    assert done["method"] == "unsubscribe" and done["success"] is True
    assert done["result"] == {"channel": "trade", "symbol": "BTC/USD"}
    assert session.streams == {}
    (again,) = ask(session, request)
    assert again["success"] is False and again["error"] == "Subscription Not Found"


def test_ping_is_answered_with_pong():
    assert ask(Session("/v2"), {"method": "ping", "req_id": 101}) == [
        {"method": "pong", "req_id": 101, "time_in": STAMP, "time_out": STAMP}
    ]


def test_other_channels_are_acknowledged_but_carry_no_trades():
    session = Session("/v2")
    (ack,) = ask(session, {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}})
    (beat,) = ask(session, {"method": "subscribe", "params": {"channel": "heartbeat"}})
    assert ack["success"] and beat == {
        "method": "subscribe",
        "result": {"channel": "heartbeat"},
        "success": True,
        "time_in": STAMP,
        "time_out": STAMP,
    }
    assert session.symbols() == frozenset()
    assert list(session.streams) == ["ticker:BTC/USD", "heartbeat"]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ("{", "Malformed request: Expecting property name enclosed in double quotes"),
        ({"params": {}}, "Malformed request: method is required"),
        ({"method": "add_order"}, "Method not supported: add_order"),
        ({"method": "subscribe", "params": {"symbol": ["BTC/USD"]}}, "Malformed request: params.channel is required"),
        (
            {"method": "subscribe", "params": {"channel": "trades", "symbol": ["BTC/USD"]}},
            "Channel not supported: trades",
        ),
        (
            {"method": "subscribe", "params": {"channel": "trade", "symbol": "BTC/USD"}},
            "Malformed request: params.symbol must be a list of currency pairs",
        ),
        (subscribe("BTC/USD", snapshot="yes"), "Malformed request: params.snapshot must be a boolean"),
    ],
)
def test_malformed_requests_fail_without_subscribing(request_: Any, error: str):
    session = Session("/v2")
    (reply,) = ask(session, request_)
    assert reply["success"] is False and reply["error"] == error
    assert reply["time_in"] == STAMP
    assert session.streams == {}


def test_update_carries_the_trade_on_the_subscribed_pair():
    session = Session("/v2")
    ask(session, subscribe("CANARY/USDT"))
    (frame,) = KrakenDialect().encode(session, CANARY, session.streams_of("CANARYUSDT"))
    # the decimal digits go out as they are, no float in between
    assert '"price":65000.10000000,"qty":0.00100000' in frame
    message = json.loads(frame, parse_float=Decimal)
    assert message == {
        "channel": "trade",
        "type": "update",
        "data": [
            {
                "symbol": "CANARY/USDT",
                "side": "sell",
                "price": Decimal("65000.10000000"),
                "qty": Decimal("0.00100000"),
                "ord_type": "market",
                "trade_id": TAG,
                "timestamp": "2025-06-15T15:06:40.123000Z",
            }
        ],
    }


def test_a_pair_not_followed_gets_no_update():
    session = Session("/v2")
    ask(session, subscribe("BTC/USD"))
    assert KrakenDialect().encode(session, CANARY, session.streams_of("CANARYUSDT")) == []


def test_fidelity_mapping_holds_for_what_is_sent():
    dialect = KrakenDialect()
    fmt = dialect.formats["trade"]
    record = dialect.record(CANARY, "trade")
    assert record[fmt.tag_field] == TAG
    assert list(compare(dialect.attributes(CANARY), record, fmt.fields)) == []


def test_fidelity_mapping_catches_a_rounded_price_and_a_flipped_side():
    dialect = KrakenDialect()
    record = dialect.record(CANARY, "trade") | {"price": 65000.1000001, "side": "buy"}
    diffs = {field for field, _, _ in compare(dialect.attributes(CANARY), record, dialect.formats["trade"].fields)}
    assert diffs == {"price", "side"}


@pytest.mark.parametrize(("symbol", "pair"), [("CANARYUSDT2", "CANARY/USDT2"), ("CANARYUSDT17", "CANARY/USDT17")])
def test_derived_canary_symbols_keep_their_digits_on_the_quote(symbol: str, pair: str):
    assert pair_of(symbol) == pair
    assert symbol_of(pair) == symbol


def test_a_carried_canary_keeps_its_own_pair_on_the_carrier_subscription():
    session = Session("/v2")
    dialect = KrakenDialect()
    dialect.handle(session, json.dumps(subscribe("BTC/USD")), NOW, {})
    (frame,) = dialect.encode(session, CANARY, session.streams_of("BTCUSD"))
    (entry,) = json.loads(frame)["data"]
    assert (entry["symbol"], entry["trade_id"]) == ("CANARY/USDT", TAG)


def test_the_record_spells_the_pair_as_it_was_subscribed():
    session = Session("/v2")
    dialect = KrakenDialect()
    dialect.handle(session, json.dumps(subscribe("AB/CD")), NOW, {})  # CD is no quote pair_of knows
    trade = Trade("ABCD", TAG, "1.5", "2", False, 1_750_000_000_123)
    assert dialect.record(trade, "trade")["symbol"] == "AB/CD"
    assert dialect.kind_of("trade:AB/CD") == "trade" and dialect.kind_of("ticker:AB/CD") is None
