"""The feed dialects by name: one exchange's WebSocket protocol each (Binance streams, Kraken v2)."""

from __future__ import annotations

from collections.abc import Callable

from pipeline_check.backends.websocket.binance import BinanceDialect
from pipeline_check.backends.websocket.dialect import Dialect
from pipeline_check.backends.websocket.kraken import KrakenDialect

# a dialect by its name, built with the exchange's defaults
DIALECTS: dict[str, Callable[[], Dialect]] = {
    BinanceDialect.name: BinanceDialect,
    KrakenDialect.name: KrakenDialect,
}
