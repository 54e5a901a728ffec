"""Binance spot market streams, as ``binance-spot-api-docs/web-socket-streams.md`` describes them.

What this module relies on, from that page:

- "Raw streams are accessed at /ws/<streamName>"; "Combined streams are accessed at
  /stream?streams=<streamName1>/<streamName2>/<streamName3>"; "Combined stream events are wrapped as
  follows: {"stream":"<streamName>","data":<rawPayload>}"; "All symbols for streams are lowercase".
- Live subscribing: ``{"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}`` answered
  ``{"result": null, "id": 1}`` (likewise ``UNSUBSCRIBE``); ``LIST_SUBSCRIPTIONS`` answered
  ``{"result": ["btcusdt@aggTrade"], "id": 3}``; ``SET_PROPERTY``/``GET_PROPERTY`` of ``combined``, which
  "is set to false when connecting using /ws/ ("raw streams") and true when connecting using /stream/".
  The ``id`` may be a "64-bit signed integer", an "alphanumeric string; max length 36" or ``null``.
- Errors: code 0 "Unknown property", 1 "Invalid value type: expected Boolean", 2 "Invalid request: ..."
  (property name must be a string, request ID must be an unsigned integer, unknown variant ..., too many
  parameters, missing field `method`), 3 "Invalid JSON: ...". The page lists the inner object; on the
  wire it comes as ``{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}`` (as clients log
  it), which is also the answer to a malformed stream name.
- "The WebSocket server will send a ping frame every 20 seconds. If the WebSocket server does not receive
  a pong frame back from the connection within a minute the connection will be disconnected."
- "A single connection to stream.binance.com is only valid for 24 hours".
- Payloads: trade ``{"e":"trade","E":..,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":..,"m":true,
  "M":true}`` (``Trade.to_json``); aggTrade ``{"e":"aggTrade","E":..,"s":..,"a":12345,"p":..,"q":..,
  "f":100,"l":105,"T":..,"m":..,"M":true}``, here one trade per aggregate (``a = f = l``, the tag).

Not modelled: the 5 incoming messages per second and 1,024 streams per connection limits, the
``timeUnit`` query and the ``serverShutdown`` event. Streams other than ``@trade``/``@aggTrade`` are
accepted and listed but carry nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline_check.backends.websocket.dialect import Heartbeat, PathRejected, Session, WireFormat
from pipeline_check.canary.trades import Trade

# a stream name's syntax (``btcusdt@depth@100ms``, ``!ticker@arr``); only the two below carry trades
STREAM = re.compile(r"^(?:[a-z0-9]+|![A-Za-z0-9]+)@[A-Za-z0-9_@]+$")
TRADE_STREAM = re.compile(r"^([a-z0-9]+)@(trade|aggTrade)$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9]{1,36}$")
INT64 = range(-(2**63), 2**63)

Reply = dict[str, Any]


@dataclass(slots=True)
class BinanceSession(Session):
    """A Binance connection; ``combined`` wraps each message as ``{"stream": ..., "data": ...}``."""

    combined: bool = False


class RequestError(Exception):
    """A client request Binance answers with ``{"error": {"code", "msg"}}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _encode(reply: Reply) -> str:
    return json.dumps(reply, separators=(",", ":"))


def _error(code: int, msg: str, request_id: Reply | None = None) -> str:
    """Binance's error reply; it names the request's ``id`` once the id itself was readable."""
    return _encode({"error": {"code": code, "msg": msg}, **(request_id or {})})


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset``, the way the exchange's JSON parser reports them."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in INT64
    return isinstance(value, str) and REQUEST_ID.match(value) is not None


def trade_symbol(stream: str) -> str | None:
    """``btcusdt@trade`` -> ``BTCUSDT``; None for a stream that carries no trades."""
    match = TRADE_STREAM.match(stream)
    return match.group(1).upper() if match else None


class BinanceDialect:
    """Binance's ``/ws`` and ``/stream`` endpoints with ``@trade`` and ``@aggTrade`` payloads."""

    name = "binance"
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 60.0
    max_connection_age: float | None = 24 * 3600.0
    heartbeat: Heartbeat | None = None
    history_depth = 0
    formats: Mapping[str, WireFormat] = {
        "trade": WireFormat(
            "trade",
            tag_field="t",
            fields={
                "s": "symbol",
                "t": "trade_id",
                "p": "price:decimal",
                "q": "quantity:decimal",
                "T": "time_ms:ms",
                "m": "buyer_is_maker",
            },
        ),
        "aggTrade": WireFormat(
            "aggTrade",
            tag_field="a",
            fields={
                "s": "symbol",
                "a": "trade_id",
                "f": "trade_id",
                "l": "trade_id",
                "p": "price:decimal",
                "q": "quantity:decimal",
                "T": "time_ms:ms",
                "m": "buyer_is_maker",
            },
        ),
    }

    def connect(self, path: str) -> BinanceSession:
        url = urlsplit(path)
        where = unquote(url.path).rstrip("/")
        if where == "/ws" or where.startswith("/ws/"):
            names = where.removeprefix("/ws").split("/")
            combined = False
        elif where == "/stream":
            names = [n for value in parse_qs(url.query).get("streams", []) for n in value.split("/")]
            combined = True
        else:
            raise PathRejected(
                404, f"no stream at {url.path}: raw streams are at /ws/<symbol>@trade, combined at /stream?streams="
            )
        session = BinanceSession(path, combined=combined)
        for name in filter(None, names):
            if not STREAM.match(name):
                raise PathRejected(400, f"invalid stream name {name!r}: expected <lowercase symbol>@trade")
            session.follow(name, trade_symbol(name))
        return session

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[BinanceSession, object], object]] = {
            "SUBSCRIBE": self._subscribe,
            "UNSUBSCRIBE": self._unsubscribe,
            "LIST_SUBSCRIPTIONS": self._list,
            "SET_PROPERTY": self._set_property,
            "GET_PROPERTY": self._get_property,
        }

    def greet(self, session: Session, now: dt.datetime) -> list[str]:
        return []

    def handle(
        self, session: Session, frame: str, now: dt.datetime, history: Mapping[str, Sequence[Trade]]
    ) -> list[str]:
        session = _binance(session)
        try:
            request = json.loads(frame)
        except json.JSONDecodeError as exc:
            what = "expected value" if exc.msg == "Expecting value" else exc.msg[:1].lower() + exc.msg[1:]
            return [_error(3, f"Invalid JSON: {what} at line {exc.lineno} column {exc.colno}")]
        if not isinstance(request, dict):
            return [_error(2, "Invalid request: expected a JSON object")]
        request_id = request.get("id")
        if not _valid_id(request_id):
            return [_error(2, "Invalid request: request ID must be an unsigned integer")]
        try:
            result = self._dispatch(session, request, frame)
        except RequestError as exc:
            return [_error(exc.code, exc.msg, {"id": request_id})]
        return [_encode({"result": result, "id": request_id})]

    def _dispatch(self, session: BinanceSession, request: dict[str, Any], frame: str) -> object:
        if "method" not in request:
            line, column = _position(frame, len(frame.rstrip()))
            raise RequestError(2, f"Invalid request: missing field `method` at line {line} column {column}")
        method = request["method"]
        handler = self._handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            found = re.search(r'"method"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\s]+)', frame)
            line, column = _position(frame, found.end(1) if found else len(frame))
            expected = ", ".join(f"`{m}`" for m in self._handlers)
            where = f"at line {line} column {column}"
            raise RequestError(2, f"Invalid request: unknown variant `{method}`, expected one of {expected} {where}")
        return handler(session, request.get("params"))

    @staticmethod
    def _streams(params: object) -> list[str]:
        if params is None:
            raise RequestError(2, "Invalid request: missing field `params`")
        if not isinstance(params, list) or not all(isinstance(p, str) and STREAM.match(p) for p in params):
            raise RequestError(2, "Invalid request: invalid stream")
        return params

    def _subscribe(self, session: BinanceSession, params: object) -> None:
        for name in self._streams(params):
            session.follow(name, trade_symbol(name))

    def _unsubscribe(self, session: BinanceSession, params: object) -> None:
        for name in self._streams(params):
            session.drop(name)

    @staticmethod
    def _list(session: BinanceSession, params: object) -> list[str]:
        if params:
            raise RequestError(2, "Invalid request: too many parameters")
        return list(session.streams)

    @staticmethod
    def _property_name(params: object, arity: int) -> str:
        if isinstance(params, list) and len(params) > arity:
            raise RequestError(2, "Invalid request: too many parameters")
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise RequestError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise RequestError(0, "Unknown property")
        return params[0]

    def _set_property(self, session: BinanceSession, params: object) -> None:
        self._property_name(params, 2)
        value = params[1] if isinstance(params, list) and len(params) == 2 else None
        if not isinstance(value, bool):
            raise RequestError(1, "Invalid value type: expected Boolean")
        session.combined = value

    def _get_property(self, session: BinanceSession, params: object) -> bool:
        self._property_name(params, 1)
        return session.combined

    def kind_of(self, stream: str) -> str | None:
        match = TRADE_STREAM.match(stream)
        return match.group(2) if match else None

    def encode(self, session: Session, trade: Trade, streams: Sequence[str]) -> list[str]:
        session = _binance(session)
        frames = []
        for stream in streams:
            payload = self._payload(trade, "aggTrade" if stream.endswith("@aggTrade") else "trade")
            # stream names match STREAM, so they need no JSON escaping
            frames.append(f'{{"stream":"{stream}","data":{payload}}}' if session.combined else payload)
        return frames

    @staticmethod
    def _payload(trade: Trade, kind: str) -> str:
        if kind == "trade":
            return trade.to_json()
        tag = trade.trade_id
        event = trade.to_dict()
        return _encode(
            {
                "e": "aggTrade",
                "E": event["E"],
                "s": event["s"],
                "a": tag,
                "p": event["p"],
                "q": event["q"],
                "f": tag,
                "l": tag,
                "T": event["T"],
                "m": event["m"],
                "M": True,
            }
        )

    def record(self, trade: Trade, kind: str) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self._payload(trade, kind), parse_float=Decimal)
        return parsed

    def attributes(self, trade: Trade) -> dict[str, object]:
        return dataclasses.asdict(trade)


def _binance(session: Session) -> BinanceSession:
    """The Binance session the server made for this dialect (``connect`` made it)."""
    if not isinstance(session, BinanceSession):
        raise TypeError(f"a Binance connection carries a BinanceSession, not {type(session).__name__}")
    return session
