"""Exchange WebSocket feeds: ``FeedServer`` speaking one ``Dialect`` (Binance streams, Kraken v2), TLS
material for ``wss://`` and the routing of trades over the symbols the ingestors subscribed to."""

from __future__ import annotations

from collections.abc import Callable

from pipeline_check.feeds.binance import BinanceDialect
from pipeline_check.feeds.dialect import Dialect, Heartbeat, PathRejected, Session, WireFormat
from pipeline_check.feeds.kraken import KrakenDialect
from pipeline_check.feeds.routing import SymbolSpreader
from pipeline_check.feeds.server import EXCHANGE, FeedServer, Subscription
from pipeline_check.feeds.tls import TlsFiles

# a dialect by its name, built with the exchange's defaults
DIALECTS: dict[str, Callable[[], Dialect]] = {
    BinanceDialect.name: BinanceDialect,
    KrakenDialect.name: KrakenDialect,
}

__all__ = [
    "DIALECTS",
    "EXCHANGE",
    "BinanceDialect",
    "Dialect",
    "FeedServer",
    "Heartbeat",
    "KrakenDialect",
    "PathRejected",
    "Session",
    "Subscription",
    "SymbolSpreader",
    "TlsFiles",
    "WireFormat",
]
