"""What the ingestor says to its feed and which records it produces from each frame, per ``FEED_MODE``.

No I/O here, so every rule is unit-tested without sockets.

- ``binance-raw`` (default): ``FEED_URL`` names the streams (``ws://host/ws/btcusdt@trade``); a trade frame
  is produced unchanged, keyed by its ``s``.
- ``binance-combined``: ``FEED_URL`` is a combined-stream endpoint (``wss://host/stream?streams=...``);
  each message is ``{"stream": ..., "data": <trade>}`` and the ``data`` is produced.
- ``kraken``: ``FEED_URL`` is Kraken's v2 endpoint (``wss://host/v2``); each trade of a ``trade`` channel
  message becomes the Binance-shaped record the consumer reads. Mapped rather than carried as Kraken's
  record, so the consumer, the table and the query API keep one schema whatever the venue (an ingestor
  normalises at the edge): ``BTC/USD`` -> ``s = "BTCUSD"``, ``trade_id`` -> ``t``, ``price``/``qty`` ->
  ``p``/``q`` as the number's own digits (read as text, never through a float), ``side = "sell"`` ->
  ``m = true`` (the taker sold: the buyer made the book), the RFC 3339 ``timestamp`` -> ``T`` and ``E`` in
  epoch ms (Kraken's microseconds below the millisecond are cut).

``FEED_SYMBOLS`` (Binance ``BTCUSDT,ETHUSDT``; Kraken pairs ``BTC/USD,ETH/USD``) are subscribed after every
connect: Binance ``SUBSCRIBE`` to ``<symbol>@trade``, Kraken ``subscribe`` to the trade channel (no
snapshot: a reconnect would produce the last trades again). Replies and heartbeats are logged, not
produced. With ``DROP_UNSUBSCRIBED=1`` a trade of a symbol the ingestor did not subscribe to (in the URL
or ``FEED_SYMBOLS``) is dropped, as an ingestor that filters its feed does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .common import fail

MODES = ("binance-raw", "binance-combined", "kraken")
BINANCE_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
KRAKEN_PAIR = re.compile(r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")
TRADE_STREAM = re.compile(r"^([a-z0-9]+)@(?:trade|aggTrade)$")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
REQUEST_ID = 1


@dataclass(slots=True)
class Frame:
    """What one frame from the feed gives: records to produce (value, key), trades dropped, and a
    reply to log (``error`` when the feed refused a request)."""

    records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    dropped: int = 0
    reply: str | None = None
    error: bool = False


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _key(symbol: object) -> bytes | None:
    return symbol.encode() if isinstance(symbol, str) and symbol else None


def url_symbols(url: str) -> frozenset[str]:
    """Symbols of the trade streams a Binance URL names (``/ws/btcusdt@trade``, ``?streams=...``)."""
    parts = urlsplit(url)
    names = unquote(parts.path).removeprefix("/ws").split("/")
    names += [n for value in parse_qs(parts.query).get("streams", []) for n in value.split("/")]
    return frozenset(m.group(1).upper() for n in names if (m := TRADE_STREAM.match(n)))


class FeedMode:
    """One ``FEED_MODE``: the requests to send after connecting and how frames become records."""

    def __init__(self, mode: str, url: str, symbols: tuple[str, ...], drop_unsubscribed: bool) -> None:
        self.mode = mode
        self.drop_unsubscribed = drop_unsubscribed
        if mode == "kraken":
            for pair in symbols:
                if not KRAKEN_PAIR.match(pair):
                    fail(
                        "FEED_SYMBOLS", ",".join(symbols), f"{pair!r} is no Kraken pair; write BASE/QUOTE, e.g. BTC/USD"
                    )
            self.pairs = symbols
            self.subscribed = frozenset(p.replace("/", "") for p in symbols)
        else:
            for symbol in symbols:
                if not BINANCE_SYMBOL.match(symbol):
                    fail("FEED_SYMBOLS", ",".join(symbols), f"{symbol!r} is no Binance symbol; write e.g. BTCUSDT")
            self.pairs = ()
            self.subscribed = url_symbols(url) | frozenset(symbols)
        self.streams = tuple(f"{s.lower()}@trade" for s in symbols) if mode != "kraken" else ()
        if mode != "binance-raw" and not self.subscribed:
            fail("FEED_SYMBOLS", None, f"FEED_MODE={mode} subscribes to nothing; list the symbols to subscribe to")
        if drop_unsubscribed and not self.subscribed:
            fail(
                "DROP_UNSUBSCRIBED", "1", "no subscribed symbol is known; name streams in FEED_URL or set FEED_SYMBOLS"
            )
        # the default: every frame is a trade to produce as it came
        self.passthrough = mode == "binance-raw" and not symbols and not drop_unsubscribed

    def requests(self) -> list[str]:
        """Frames to send once connected: the subscription, when there is one to make."""
        if self.mode == "kraken":
            params = {"channel": "trade", "symbol": list(self.pairs), "snapshot": False}
            return [json.dumps({"method": "subscribe", "params": params, "req_id": REQUEST_ID})]
        if self.streams:
            return [json.dumps({"method": "SUBSCRIBE", "params": list(self.streams), "id": REQUEST_ID})]
        return []

    def read(self, frame: bytes) -> Frame:
        """The records one frame gives."""
        try:
            # Kraken's prices are JSON numbers: read as their own digits, never through a float
            message = json.loads(frame, parse_float=str)
        except ValueError:
            return self._trades([(frame, None)]) if self.mode == "binance-raw" else Frame(reply="not JSON", error=True)
        if not isinstance(message, dict):
            return self._trades([(frame, None)]) if self.mode == "binance-raw" else Frame()
        if self.mode == "kraken":
            return self._kraken(message)
        if "id" in message and ("result" in message or "error" in message):
            return Frame(reply=json.dumps(message), error="error" in message)
        if self.mode == "binance-combined":
            data = message.get("data")
            if not isinstance(data, dict):
                return Frame(reply=f"no data in {json.dumps(message)[:200]}", error=True)
            return self._trades([(_json(data), data.get("s"))])
        return self._trades([(frame, message.get("s"))])

    def _kraken(self, message: dict[str, Any]) -> Frame:
        channel = message.get("channel")
        if channel in ("heartbeat", "status"):
            return Frame()
        if channel == "trade" and isinstance(message.get("data"), list):
            records = [kraken_record(entry) for entry in message["data"] if isinstance(entry, dict)]
            return self._trades([(_json(r), r["s"]) for r in records])
        return Frame(reply=json.dumps(message), error=message.get("success") is False or "error" in message)

    def _trades(self, trades: list[tuple[bytes, object]]) -> Frame:
        out = Frame()
        for value, symbol in trades:
            if self.drop_unsubscribed and symbol not in self.subscribed:
                out.dropped += 1
            else:
                out.records.append((value, _key(symbol)))
        return out


def _text(value: object) -> str | None:
    """A JSON number read as text (``parse_float=str``); an integer's digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _epoch_ms(stamp: object) -> int | None:
    """RFC 3339 (``2023-09-25T07:49:37.708706Z``) -> epoch ms, in integer arithmetic."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)


def kraken_record(entry: dict[str, Any]) -> dict[str, Any]:
    """One Kraken v2 trade as the Binance-shaped record; a field Kraken left out stays null, and the
    consumer sends the record to its DLQ naming it."""
    pair = entry.get("symbol")
    side = entry.get("side")
    ms = _epoch_ms(entry.get("timestamp"))
    return {
        "e": "trade",
        "E": ms,
        "s": pair.replace("/", "") if isinstance(pair, str) else None,
        "t": entry.get("trade_id"),
        "p": _text(entry.get("price")),
        "q": _text(entry.get("qty")),
        "T": ms,
        "m": side == "sell" if side in ("buy", "sell") else None,
        "M": True,
    }
