"""The ``Dialect`` protocol: one exchange's WebSocket market-data protocol, without any I/O.

A dialect turns the path a client dials into a ``Session``, answers the client's frames (changing the
session's subscriptions) and writes a ``Trade`` as that exchange's message for each stream a session
follows. ``FeedServer`` does the sockets, pings, heartbeats and routing; a third exchange is one new
module implementing this protocol.

Streams are named as the exchange names them (``btcusdt@trade``), or ``channel:symbol`` where it names
the two apart (Kraken's ``trade:BTC/USD``); each maps to the ``Trade.symbol`` it carries (``BTCUSDT``),
or to None when the exchange serves it but this feed sends nothing on it (order books, tickers): it is
acknowledged and listed as the real exchange would, so an ingestor that also asks for those is not
turned away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline_check.canary.trades import Trade


class PathRejected(Exception):
    """The dialled path names no feed of this dialect; answered as an HTTP error, no WebSocket opens."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One kind of stream message: the field the canary tag rides in (a JMESPath into the unwrapped
    message) and which wire field carries which ``Trade`` attribute, as ``pipeline_check.canary.fidelity``
    specs (``{"p": "price:decimal"}``), to be compared against ``Dialect.attributes(trade)``."""

    kind: str
    tag_field: str
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``frame`` goes to a connection that follows any stream and got nothing for ``interval`` seconds."""

    interval: float
    frame: str


@dataclass(slots=True)
class Session:
    """One connection: the path it dialled and the streams it follows, in subscription order."""

    path: str
    streams: dict[str, str | None] = field(default_factory=dict)
    _by_symbol: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def follow(self, stream: str, symbol: str | None) -> None:
        """Add ``stream`` (carrying ``symbol``, or nothing from this feed); following twice is once."""
        if stream in self.streams:
            return
        self.streams[stream] = symbol
        if symbol is not None:
            self._by_symbol.setdefault(symbol, []).append(stream)

    def drop(self, stream: str) -> bool:
        """Stop following ``stream``; False when it was not followed."""
        if stream not in self.streams:
            return False
        symbol = self.streams.pop(stream)
        if symbol is not None:
            self._by_symbol[symbol].remove(stream)
            if not self._by_symbol[symbol]:
                del self._by_symbol[symbol]
        return True

    def streams_of(self, symbol: str) -> Sequence[str]:
        """The followed streams that carry ``symbol``'s trades (publishing looks this up per trade)."""
        return self._by_symbol.get(symbol, ())

    def symbols(self) -> frozenset[str]:
        return frozenset(self._by_symbol)


class Dialect(Protocol):
    """What ``FeedServer`` needs from an exchange's protocol. Intervals are in seconds; None is never."""

    name: str
    ping_interval: float | None  # WebSocket ping frames from the server
    ping_timeout: float | None  # the pong must come within this, or the server closes
    max_connection_age: float | None  # the server closes connections this old
    heartbeat: Heartbeat | None  # an application heartbeat on an idle, subscribed connection
    history_depth: int  # recent trades kept per symbol for subscription snapshots
    formats: Mapping[str, WireFormat]  # by stream kind

    def connect(self, path: str) -> Session:
        """The session for a client dialling ``path`` (with its query); ``PathRejected`` if none."""
        ...

    def greet(self, session: Session, now: dt.datetime) -> list[str]:
        """Frames sent as soon as the connection opens."""
        ...

    def handle(
        self, session: Session, frame: str, now: dt.datetime, history: Mapping[str, Sequence[Trade]]
    ) -> list[str]:
        """The replies to one client frame; subscription requests change ``session``. ``history`` holds
        the last ``history_depth`` trades published per symbol."""
        ...

    def kind_of(self, stream: str) -> str | None:
        """The ``formats`` kind a stream name carries (``btcusdt@aggTrade`` -> ``aggTrade``); None for a
        stream that carries no trades."""
        ...

    def encode(self, session: Session, trade: Trade, streams: Sequence[str]) -> list[str]:
        """The frames carrying ``trade`` to ``session`` on ``streams`` (followed streams of its own symbol,
        or of another symbol that carries it: a canary whose symbol nobody follows), one per stream; the
        payload keeps ``trade``'s own symbol."""
        ...

    def record(self, trade: Trade, kind: str) -> dict[str, object]:
        """The unwrapped message of a ``kind`` stream as a client parses it (decimals as ``Decimal``)."""
        ...

    def attributes(self, trade: Trade) -> dict[str, object]:
        """``trade``'s attributes as this exchange spells them: the sent side of ``formats[...].fields``."""
        ...
