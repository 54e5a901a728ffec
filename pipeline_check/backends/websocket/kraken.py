"""Kraken spot WebSocket v2 (``wss://ws.kraken.com/v2``), trade channel, as docs.kraken.com describes it.

What this module relies on (spot-websocket-v2 pages trade, heartbeat, status and ping):

- Subscribe ``{"method":"subscribe","params":{"channel":"trade","symbol":["MATIC/USD"],"snapshot":true},
  "req_id":1}``; ``snapshot`` "Default: false"; "The snapshot reflects the most recent 50 trades".
- Acknowledged once per symbol: ``{"method":"subscribe","result":{"channel":"trade","snapshot":true,
  "symbol":"MATIC/USD"},"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":...}``, with the
  request's ``req_id``; ``unsubscribe`` alike.
- Messages ``{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",
  "price":0.5147,"qty":6423.46326,"ord_type":"limit","trade_id":4665846,
  "timestamp":"2023-09-25T07:49:37.708706Z"}]}`` (``type`` ``snapshot`` for the snapshot): ``side`` is the
  taker's direction, ``price`` and ``qty`` JSON numbers, ``timestamp`` RFC 3339 with microseconds.
- Heartbeat ``{"channel":"heartbeat"}`` "approximately once every second in the absence of any other
  channel updates", "automatically generated on subscription to any channel".
- Status ``{"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":..,
  "system":"online","version":..}]}`` "on successful websocket connection".
- Ping ``{"method":"ping","req_id":101}`` answered ``{"method":"pong","req_id":101,"time_in":..,
  "time_out":..}``; no server-side WebSocket pings or connection age limit are documented.
- Errors as clients see them: ``{"error":"Currency pair not supported XBT/EUR","method":"subscribe",
  "success":false,"symbol":"XBT/EUR","time_in":..,"time_out":..}``. The other error texts here keep that
  shape; their wording is not documented.

Symbols: v2 spells pairs ``BASE/QUOTE`` with ``BTC`` (never ``XBT``). A ``Trade`` symbol is the pair
without the slash (``BTC/USDT`` <-> ``BTCUSDT``, ``CANARY/USDT`` <-> ``CANARYUSDT``); the other way is the
pair a connection subscribed to, or else splits before the longest known quote currency (``QUOTES``), the
digits that extend a canary symbol staying on the quote (``CANARYUSDT2`` -> ``CANARY/USDT2``).

Numbers: ``price`` and ``qty`` are written as the trade's decimal text, digit for digit, as a JSON number
literal (``65000.10000000``), never through a float, so a client parsing decimals gets exactly what was
sent. ``ord_type`` is not a ``Trade`` attribute; every trade says ``market``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pipeline_check.backends.websocket.dialect import Heartbeat, PathRejected, Session, WireFormat
from pipeline_check.canary.fidelity import EPOCH
from pipeline_check.canary.trades import Trade

PAIR = re.compile(r"^([A-Z0-9]{1,16})/([A-Z0-9]{1,16})$")
QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD", "BTC", "ETH", "DAI", "DOT")
JSON_NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")
# channels an ingestor may ask for besides trades: acknowledged and listed, nothing is sent on them
QUIET_CHANNELS = ("ticker", "book", "ohlc", "instrument")
API_VERSION = "v2"
SERVICE_VERSION = "2.0.0"

Reply = dict[str, Any]


def pair_of(symbol: str) -> str:
    """``BTCUSDT`` -> ``BTC/USDT``: split before the longest quote currency it ends with, trailing
    digits aside (``CANARYUSDT2`` -> ``CANARY/USDT2``, so ``symbol_of`` gives the symbol back)."""
    stem = symbol.rstrip("0123456789")
    digits = symbol[len(stem) :]
    for quote in sorted(QUOTES, key=len, reverse=True):
        if stem.endswith(quote) and len(stem) > len(quote):
            return f"{stem.removesuffix(quote)}/{quote}{digits}"
    raise ValueError(f"symbol {symbol!r}: ends with no known quote currency ({', '.join(QUOTES)})")


def symbol_of(pair: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT``."""
    return pair.replace("/", "")


def json_number(text: str) -> str:
    """Decimal text as a JSON number literal, unchanged (``"65000.10000000"`` -> ``65000.10000000``)."""
    if not JSON_NUMBER.match(text):
        raise ValueError(f"{text!r} is not a JSON number literal")
    return text


def rfc3339(moment: dt.datetime) -> str:
    """``2023-09-25T07:49:37.708706Z``: UTC with microseconds."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trade_entry(trade: Trade, pair: str) -> str:
    """One element of a trade message's ``data``, for the subscribed ``pair``."""
    side = "sell" if trade.buyer_is_maker else "buy"  # the buyer made the book, so the taker sold
    when = rfc3339(EPOCH + dt.timedelta(milliseconds=trade.time_ms))  # integer arithmetic, no float
    return (
        f'{{"symbol":"{pair}","side":"{side}","price":{json_number(trade.price)},'
        f'"qty":{json_number(trade.quantity)},"ord_type":"market","trade_id":{trade.trade_id},'
        f'"timestamp":"{when}"}}'
    )


class RequestError(Exception):
    """A request Kraken answers with ``success: false``; ``extra`` names the symbol it is about."""

    def __init__(self, error: str, **extra: object) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class KrakenDialect:
    """Kraken's v2 endpoint (``path``, default ``/v2``) serving the ``trade`` channel."""

    name = "kraken"
    ping_interval: float | None = None
    ping_timeout: float | None = None
    max_connection_age: float | None = None
    heartbeat: Heartbeat | None = Heartbeat(1.0, '{"channel":"heartbeat"}')
    history_depth = 50
    formats: Mapping[str, WireFormat] = {
        "trade": WireFormat(
            "trade",
            tag_field="trade_id",
            fields={
                "symbol": "symbol",
                "trade_id": "trade_id",
                "price": "price:decimal",
                "qty": "quantity:decimal",
                "side": "buyer_is_maker:side",
                "timestamp": "time_ms:ms",
            },
        )
    }

    def __init__(self, path: str = "/v2") -> None:
        self.path = path
        self._connection_ids = itertools.count(1)
        self._pairs: dict[str, str] = {}  # symbol -> the pair a connection subscribed to it as

    def connect(self, path: str) -> Session:
        if path.split("?", 1)[0].rstrip("/") != self.path.rstrip("/"):
            raise PathRejected(404, f"no feed at {path}: Kraken's v2 API is served at {self.path}")
        return Session(path)

    def greet(self, session: Session, now: dt.datetime) -> list[str]:
        status = {
            "api_version": API_VERSION,
            "connection_id": next(self._connection_ids),
            "system": "online",
            "version": SERVICE_VERSION,
        }
        return [_encode({"channel": "status", "type": "update", "data": [status]})]

    def handle(
        self, session: Session, frame: str, now: dt.datetime, history: Mapping[str, Sequence[Trade]]
    ) -> list[str]:
        stamp = rfc3339(now)
        times = {"time_in": stamp, "time_out": stamp}
        try:
            request = json.loads(frame)
        except json.JSONDecodeError as exc:
            return [_encode({"error": f"Malformed request: {exc.msg}", "success": False} | times)]
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return [_encode({"error": "Malformed request: method is required", "success": False} | times)]
        method: str = request["method"]
        req_id = {"req_id": request["req_id"]} if "req_id" in request else {}
        echo = {"method": method} | req_id
        if method == "ping":
            return [_encode({"method": "pong"} | req_id | times)]
        if method not in ("subscribe", "unsubscribe"):
            return [_encode({"error": f"Method not supported: {method}", "success": False} | echo | times)]
        try:
            results = self._subscription(session, method == "subscribe", request.get("params"), history)
        except RequestError as exc:
            return [_encode({"error": exc.error} | echo | {"success": False} | exc.extra | times)]
        return [reply if isinstance(reply, str) else _encode(echo | reply | times) for reply in results]

    def _subscription(
        self, session: Session, subscribe: bool, params: object, history: Mapping[str, Sequence[Trade]]
    ) -> list[Reply | str]:
        """Acks (``result`` or ``error``, completed by the caller) and snapshot frames, in sending order."""
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            raise RequestError("Malformed request: params.channel is required")
        channel: str = params["channel"]
        if channel == "heartbeat":
            _toggle(session, subscribe, "heartbeat", None)
            return [{"result": {"channel": "heartbeat"}, "success": True}]
        if channel != "trade" and channel not in QUIET_CHANNELS:
            raise RequestError(f"Channel not supported: {channel}")
        pairs = params.get("symbol")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, str) for p in pairs):
            raise RequestError("Malformed request: params.symbol must be a list of currency pairs")
        snapshot = params.get("snapshot", False)
        if channel == "trade" and not isinstance(snapshot, bool):
            raise RequestError("Malformed request: params.snapshot must be a boolean")
        replies: list[Reply | str] = []
        for pair in pairs:
            result: Reply = {"channel": channel, "symbol": pair}
            if not PAIR.match(pair):
                replies.append({"error": f"Currency pair not supported {pair}", "success": False, "symbol": pair})
                continue
            carries = symbol_of(pair) if channel == "trade" else None
            if carries is not None:
                self._pairs[carries] = pair
            if not _toggle(session, subscribe, f"{channel}:{pair}", carries):
                replies.append({"error": "Subscription Not Found", "success": False, "symbol": pair})
                continue
            if channel == "trade" and subscribe:
                result["snapshot"] = snapshot
            replies.append({"result": result, "success": True})
            if channel == "trade" and subscribe and snapshot:
                entries = [trade_entry(t, pair) for t in history.get(symbol_of(pair), ())]
                replies.append(f'{{"channel":"trade","type":"snapshot","data":[{",".join(entries)}]}}')
        return replies

    def kind_of(self, stream: str) -> str | None:
        return "trade" if stream.startswith("trade:") else None

    def encode(self, session: Session, trade: Trade, streams: Sequence[str]) -> list[str]:
        entry = trade_entry(trade, self.pair(trade.symbol))
        return [f'{{"channel":"trade","type":"update","data":[{entry}]}}' for _ in streams]

    def pair(self, symbol: str) -> str:
        """The pair ``symbol`` was subscribed as, else ``pair_of(symbol)``."""
        return self._pairs.get(symbol) or pair_of(symbol)

    def record(self, trade: Trade, kind: str) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(trade_entry(trade, self.pair(trade.symbol)), parse_float=Decimal)
        return parsed

    def attributes(self, trade: Trade) -> dict[str, object]:
        return dataclasses.asdict(trade) | {"symbol": self.pair(trade.symbol)}


def _toggle(session: Session, subscribe: bool, stream: str, carries: str | None) -> bool:
    """Follow or drop ``stream``; False when unsubscribing from a stream not followed."""
    if subscribe:
        session.follow(stream, carries)
        return True
    return session.drop(stream)


def _encode(reply: Reply) -> str:
    return json.dumps(reply, separators=(",", ":"))
