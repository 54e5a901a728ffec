"""The feed dialects by name: one exchange's WebSocket protocol each (Binance streams, Kraken v2), or one
another distribution registers under the ``pipeline_check.dialects`` entry-point group.

A dialect is one module with a class implementing :class:`~pipeline_check.backends.websocket.dialect.Dialect`,
built with the exchange's defaults (no arguments); ``source.dialect`` names it.
"""

from __future__ import annotations

from pipeline_check.backends.websocket.dialect import Dialect
from pipeline_check.core.plugins import Registry

DIALECTS: Registry[Dialect] = Registry(
    "dialect",
    "pipeline_check.dialects",
    {
        "binance": "pipeline_check.backends.websocket.binance:BinanceDialect",
        "kraken": "pipeline_check.backends.websocket.kraken:KrakenDialect",
    },
    needs=("name", "formats", "connect", "greet", "handle", "kind_of", "encode", "record", "attributes"),
)


def known_dialect(name: str) -> str:
    """``name`` if a dialect is registered under it (a settings validator: ``ValueError`` otherwise)."""
    known = [repr(n) for n in DIALECTS.names()]
    if repr(name) not in known:
        choices = f"{', '.join(known[:-1])} or {known[-1]}" if len(known) > 1 else known[0]
        raise ValueError(f"Input should be {choices}")
    return name
