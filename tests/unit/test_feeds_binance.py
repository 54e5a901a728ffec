"""The Binance dialect's paths, frames and payloads, without sockets."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from pipeline_check.backends.websocket.binance import BinanceDialect, BinanceSession
from pipeline_check.backends.websocket.dialect import PathRejected
from pipeline_check.canary.fidelity import compare
from pipeline_check.canary.trades import Trade

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
TAG = 2**62 | 5 << 26 | 17
BTC = Trade("BTCUSDT", TAG, "65000.10000000", "0.00100000", True, 1_750_000_000_123)


def ask(session: BinanceSession, request: Any) -> list[dict[str, Any]]:
    frame = request if isinstance(request, str) else json.dumps(request)
    return [json.loads(reply) for reply in BinanceDialect().handle(session, frame, NOW, {})]


@pytest.fixture
def raw() -> BinanceSession:
    return BinanceDialect().connect("/ws")


def test_raw_path_follows_each_stream_named():
    session = BinanceDialect().connect("/ws/btcusdt@trade/ethusdt@aggTrade/btcusdt@depth")
    assert not session.combined
    assert session.streams == {"btcusdt@trade": "BTCUSDT", "ethusdt@aggTrade": "ETHUSDT", "btcusdt@depth": None}
    assert session.symbols() == {"BTCUSDT", "ETHUSDT"}


def test_combined_path_reads_the_streams_query():
    session = BinanceDialect().connect("/stream?streams=btcusdt@trade/ethusdt@trade")
    assert session.combined
    assert list(session.streams) == ["btcusdt@trade", "ethusdt@trade"]


@pytest.mark.parametrize("path", ["/ws", "/ws/", "/stream", "/stream/"])
def test_bare_endpoints_start_with_no_stream(path: str):
    session = BinanceDialect().connect(path)
    assert session.streams == {}
    assert session.combined == path.startswith("/stream")


@pytest.mark.parametrize(("path", "status"), [("/", 404), ("/api/v3", 404), ("/ws/BTCUSDT@trade", 400)])
def test_paths_binance_does_not_serve_are_rejected(path: str, status: int):
    with pytest.raises(PathRejected) as rejected:
        BinanceDialect().connect(path)
    assert rejected.value.status == status


def test_subscribe_answers_null_and_follows(raw: BinanceSession):
    assert ask(raw, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@aggTrade"], "id": 1}) == [
        {"result": None, "id": 1}
    ]
    assert raw.symbols() == {"BTCUSDT", "ETHUSDT"}


def test_unsubscribe_and_list(raw: BinanceSession):
    ask(raw, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1})
    assert ask(raw, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 312}) == [{"result": None, "id": 312}]
    assert ask(raw, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == [{"result": ["ethusdt@trade"], "id": 3}]
    assert raw.symbols() == {"ETHUSDT"}


def test_string_and_null_ids_are_echoed(raw: BinanceSession):
    assert ask(raw, {"method": "LIST_SUBSCRIPTIONS", "id": "abc123"}) == [{"result": [], "id": "abc123"}]
    assert ask(raw, {"method": "LIST_SUBSCRIPTIONS", "id": None}) == [{"result": [], "id": None}]


def test_combined_property_set_and_get(raw: BinanceSession):
    assert ask(raw, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == [{"result": None, "id": 5}]
    assert raw.combined
    assert ask(raw, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == [{"result": True, "id": 2}]


@pytest.mark.parametrize(
    ("request_", "code", "msg"),
    [
        ('{"method": "SUBSCRIBE", "params": [', 3, "Invalid JSON: expected value at line 1 column 36"),
        (
            {"method": "SUBSCRIBE", "params": ["x"], "id": 1.5},
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
        (
            {"method": "SUBSCRIBE", "params": [], "id": "a-b"},
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
        (
            {"method": "SUBSCRIBE", "params": [], "id": 2**63},
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
        ({"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 1}, 2, "Invalid request: invalid stream"),
        ({"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 1}, 2, "Invalid request: invalid stream"),
        ({"method": "SUBSCRIBE", "id": 1}, 2, "Invalid request: missing field `params`"),
        ({"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 1}, 2, "Invalid request: too many parameters"),
        ({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 1}, 1, "Invalid value type: expected Boolean"),
        (
            {"method": "SET_PROPERTY", "params": ["combined", True, 1], "id": 1},
            2,
            "Invalid request: too many parameters",
        ),
        ({"method": "GET_PROPERTY", "params": [7], "id": 1}, 2, "Invalid request: property name must be a string"),
        ({"method": "GET_PROPERTY", "params": ["speed"], "id": 1}, 0, "Unknown property"),
    ],
)
def test_errors_carry_binance_codes(raw: BinanceSession, request_: Any, code: int, msg: str):
    (reply,) = ask(raw, request_)
    assert reply["error"] == {"code": code, "msg": msg}


def test_unknown_method_names_the_variants_and_where(raw: BinanceSession):
    (reply,) = ask(raw, '{"method": "SUBSCRIBEX", "params": [], "id": 7}')
    assert reply == {
        "error": {
            "code": 2,
            "msg": "Invalid request: unknown variant `SUBSCRIBEX`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
            "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 23",
        },
        "id": 7,
    }


def test_missing_method_says_where(raw: BinanceSession):
    (reply,) = ask(raw, '{"params": [], "id": 4}')
    assert reply == {
        "error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 23"},
        "id": 4,
    }


def test_a_bad_stream_in_a_subscribe_changes_nothing(raw: BinanceSession):
    ask(raw, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "eth usdt@trade"], "id": 1})
    assert raw.streams == {}


def test_raw_trade_payload_carries_the_tag_in_t():
    session = BinanceDialect().connect("/ws/btcusdt@trade")
    (frame,) = BinanceDialect().encode(session, BTC, session.streams_of("BTCUSDT"))
    assert json.loads(frame) == BTC.to_dict()
    assert json.loads(frame)["t"] == TAG


def test_agg_trade_payload_carries_the_tag_in_a():
    session = BinanceDialect().connect("/ws/btcusdt@aggTrade")
    (frame,) = BinanceDialect().encode(session, BTC, session.streams_of("BTCUSDT"))
    assert json.loads(frame) == {
        "e": "aggTrade",
        "E": BTC.time_ms,
        "s": "BTCUSDT",
        "a": TAG,
        "p": "65000.10000000",
        "q": "0.00100000",
        "f": TAG,
        "l": TAG,
        "T": BTC.time_ms,
        "m": True,
        "M": True,
    }


def test_combined_wraps_each_stream_of_the_symbol():
    session = BinanceDialect().connect("/stream?streams=btcusdt@trade/btcusdt@aggTrade/ethusdt@trade")
    frames = [json.loads(f) for f in BinanceDialect().encode(session, BTC, session.streams_of("BTCUSDT"))]
    assert [f["stream"] for f in frames] == ["btcusdt@trade", "btcusdt@aggTrade"]
    assert [f["data"]["e"] for f in frames] == ["trade", "aggTrade"]


def test_a_symbol_not_followed_gets_no_frame():
    session = BinanceDialect().connect("/ws/ethusdt@trade/btcusdt@depth")
    assert BinanceDialect().encode(session, BTC, session.streams_of("BTCUSDT")) == []


@pytest.mark.parametrize("kind", ["trade", "aggTrade"])
def test_fidelity_mapping_holds_for_what_is_sent(kind: str):
    dialect = BinanceDialect()
    fmt = dialect.formats[kind]
    record = dialect.record(BTC, kind)
    assert record[fmt.tag_field] == TAG
    assert list(compare(dialect.attributes(BTC), record, fmt.fields)) == []


def test_fidelity_mapping_catches_a_changed_field():
    dialect = BinanceDialect()
    record = dialect.record(BTC, "trade") | {"p": "65000.1000001", "m": False}
    assert {field for field, _, _ in compare(dialect.attributes(BTC), record, dialect.formats["trade"].fields)} == {
        "p",
        "m",
    }


@pytest.mark.parametrize(("path", "wrapped"), [("/stream?streams=btcusdt@trade", True), ("/ws/btcusdt@trade", False)])
def test_a_carried_trade_keeps_its_own_symbol_on_the_carrier_stream(path: str, wrapped: bool):
    session = BinanceDialect().connect(path)
    canary = Trade("CANARYUSDT", TAG, "65000.10000000", "0.00100000", True, 1_750_000_000_123)
    (frame,) = (json.loads(f) for f in BinanceDialect().encode(session, canary, session.streams_of("BTCUSDT")))
    payload = frame["data"] if wrapped else frame
    assert frame.get("stream") == ("btcusdt@trade" if wrapped else None)
    assert (payload["s"], payload["t"]) == ("CANARYUSDT", TAG)


@pytest.mark.parametrize(
    ("stream", "kind"), [("btcusdt@trade", "trade"), ("btcusdt@aggTrade", "aggTrade"), ("btcusdt@depth", None)]
)
def test_stream_kinds(stream: str, kind: str | None):
    assert BinanceDialect().kind_of(stream) == kind
