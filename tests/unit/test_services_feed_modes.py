"""The reference ingestor's feed modes: what it sends after connecting and what it produces from each
frame (Binance raw and combined streams, Kraken v2 mapped to the Binance-shaped record)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from services.common import ConfigError
from services.feed_modes import FeedMode, kraken_record, url_symbols
from services.trades import parse_trade

from pipeline_check.backends.websocket.binance import BinanceDialect
from pipeline_check.backends.websocket.dialect import Session
from pipeline_check.backends.websocket.kraken import KrakenDialect
from pipeline_check.canary.trades import Trade

TAG = 2**62 | 5 << 26 | 17
CANARY = Trade("BTCUSD", TAG, "9999999999.99999999", "0.00000001", True, 1_750_000_000_123)
NOW = dt.datetime(2025, 6, 15, tzinfo=dt.UTC)


def trade_frame(symbol: str, trade_id: int = 1) -> bytes:
    return json.dumps({"e": "trade", "s": symbol, "t": trade_id}).encode()


def test_raw_mode_without_subscriptions_passes_frames_through():
    mode = FeedMode("binance-raw", "ws://h/ws/btcusdt@trade", (), False)
    assert mode.passthrough and mode.requests() == []


@pytest.mark.parametrize(
    ("url", "symbols"),
    [
        ("ws://h/ws/btcusdt@trade/ethusdt@aggTrade/solusdt@depth", {"BTCUSDT", "ETHUSDT"}),
        ("wss://h/stream?streams=btcusdt@trade/ethusdt@trade", {"BTCUSDT", "ETHUSDT"}),
        ("wss://h/stream", set()),
    ],
)
def test_symbols_named_in_the_url(url: str, symbols: set[str]):
    assert url_symbols(url) == symbols


def test_raw_mode_drops_symbols_it_did_not_subscribe_to():
    mode = FeedMode("binance-raw", "ws://h/ws/btcusdt@trade", (), True)
    assert not mode.passthrough
    kept = mode.read(trade_frame("BTCUSDT"))
    assert kept.records == [(trade_frame("BTCUSDT"), b"BTCUSDT")] and kept.dropped == 0
    dropped = mode.read(trade_frame("CANARYUSDT"))
    assert dropped.records == [] and dropped.dropped == 1


def test_combined_mode_subscribes_after_connecting():
    mode = FeedMode("binance-combined", "wss://h/stream?streams=btcusdt@trade", ("ETHUSDT", "SOLUSDT"), False)
    assert [json.loads(r) for r in mode.requests()] == [
        {"method": "SUBSCRIBE", "params": ["ethusdt@trade", "solusdt@trade"], "id": 1}
    ]
    assert mode.subscribed == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_combined_mode_unwraps_the_data_of_each_stream_message():
    mode = FeedMode("binance-combined", "wss://h/stream", ("BTCUSDT",), False)
    data = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": TAG, "p": "1.00000000", "q": "2.00000000", "T": 1, "m": True}
    got = mode.read(json.dumps({"stream": "btcusdt@trade", "data": data}).encode())
    ((value, key),) = got.records
    assert json.loads(value) == data and key == b"BTCUSDT"


def test_combined_mode_logs_replies_without_producing_them():
    mode = FeedMode("binance-combined", "wss://h/stream", ("BTCUSDT",), False)
    ack = mode.read(b'{"result":null,"id":1}')
    assert ack.records == [] and not ack.error and ack.reply == '{"result": null, "id": 1}'
    refused = mode.read(b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}')
    assert refused.records == [] and refused.error


def test_combined_mode_reads_what_the_binance_dialect_sends():
    dialect = BinanceDialect()
    session = dialect.connect("/stream?streams=btcusd@trade")
    (frame,) = dialect.encode(session, CANARY, session.streams_of("BTCUSD"))
    ((value, _),) = FeedMode("binance-combined", "wss://h/stream", ("BTCUSD",), True).read(frame.encode()).records
    assert json.loads(value) == CANARY.to_dict()


def test_kraken_mode_subscribes_to_the_trade_channel_without_snapshot():
    mode = FeedMode("kraken", "wss://h/v2", ("BTC/USD", "ETH/USD"), False)
    assert [json.loads(r) for r in mode.requests()] == [
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
            "req_id": 1,
        }
    ]
    assert mode.subscribed == {"BTCUSD", "ETHUSD"}


def test_kraken_trades_become_binance_shaped_records_digit_for_digit():
    dialect = KrakenDialect()
    session = Session("/v2")
    dialect.handle(
        session, json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}), NOW, {}
    )
    (frame,) = dialect.encode(session, CANARY, session.streams_of("BTCUSD"))
    ((value, key),) = FeedMode("kraken", "wss://h/v2", ("BTC/USD",), True).read(frame.encode()).records
    record = json.loads(value)
    assert key == b"BTCUSD"
    assert record == {
        "e": "trade",
        "E": CANARY.time_ms,
        "s": "BTCUSD",
        "t": TAG,
        "p": "9999999999.99999999",  # more digits than a float holds, kept
        "q": "0.00000001",  # never 1e-08
        "T": CANARY.time_ms,
        "m": True,  # side "sell": the buyer made the book
        "M": True,
    }
    trade = parse_trade(value)  # the consumer accepts it as it is
    assert (trade.price, trade.side) == (Decimal("9999999999.99999999"), "sell")


def test_kraken_control_messages_are_not_produced():
    mode = FeedMode("kraken", "wss://h/v2", ("BTC/USD",), False)
    for message in ({"channel": "heartbeat"}, {"channel": "status", "type": "update", "data": [{}]}):
        got = mode.read(json.dumps(message).encode())
        assert got.records == [] and got.reply is None
    refused = mode.read(b'{"error":"Currency pair not supported XBT/EUR","method":"subscribe","success":false}')
    assert refused.records == [] and refused.error


def test_kraken_mode_drops_pairs_it_did_not_subscribe_to():
    mode = FeedMode("kraken", "wss://h/v2", ("BTC/USD",), True)
    entry = {
        "symbol": "CANARY/USDT",
        "side": "buy",
        "price": 1,
        "qty": 1,
        "trade_id": 7,
        "timestamp": "2025-06-15T00:00:00Z",
    }
    got = mode.read(json.dumps({"channel": "trade", "type": "update", "data": [entry]}).encode())
    assert got.records == [] and got.dropped == 1


def test_a_kraken_trade_missing_fields_keeps_them_null_for_the_dlq():
    assert kraken_record({"symbol": "BTC/USD", "timestamp": "not a time"}) | {"e": "trade"} == {
        "e": "trade",
        "E": None,
        "s": "BTCUSD",
        "t": None,
        "p": None,
        "q": None,
        "T": None,
        "m": None,
        "M": True,
    }


@pytest.mark.parametrize(
    ("mode", "url", "symbols", "drop", "message"),
    [
        ("kraken", "wss://h/v2", ("BTCUSD",), False, "FEED_SYMBOLS='BTCUSD' (env): 'BTCUSD' is no Kraken pair"),
        ("binance-combined", "wss://h/stream", ("btc",), False, "'btc' is no Binance symbol"),
        ("binance-combined", "wss://h/stream", (), False, "FEED_MODE=binance-combined subscribes to nothing"),
        ("binance-raw", "ws://h/ws", (), True, "DROP_UNSUBSCRIBED='1' (env): no subscribed symbol is known"),
    ],
)
def test_settings_that_cannot_work_are_one_line_errors(
    mode: str, url: str, symbols: tuple[str, ...], drop: bool, message: str
):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FeedMode(mode, url, symbols, drop)
