"""Which symbols trades ride: the ones the ingestors subscribed to (a trade for a symbol nobody follows
reaches no one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pipeline_check.messages import Trade


class SymbolSpreader:
    """Deals the subscribed symbols out in turn, so background trades cover every stream followed.

    ``symbols`` is asked on every trade (``FeedServer.subscribed_symbols``: the same object until the
    subscriptions change, so the order is only re-sorted after a change).
    """

    def __init__(self, symbols: Callable[[], frozenset[str]]) -> None:
        self._symbols = symbols
        self._seen: frozenset[str] = frozenset()
        self._order: list[str] = []
        self._turn = 0

    def route(self, trade: Trade) -> Trade:
        """``trade`` on the next subscribed symbol; unchanged while nothing is subscribed."""
        current = self._symbols()
        if current is not self._seen:
            self._seen, self._order = current, sorted(current)
        if not self._order:
            return trade
        symbol = self._order[self._turn % len(self._order)]
        self._turn += 1
        return trade if trade.symbol == symbol else dataclasses.replace(trade, symbol=symbol)


def canary_symbol(wanted: str, subscribed: frozenset[str]) -> str:
    """``wanted`` when an ingestor follows it, else the first subscribed symbol (canaries must ride a
    followed stream to be delivered at all); ``ValueError`` when nothing is subscribed."""
    if wanted in subscribed:
        return wanted
    if not subscribed:
        raise ValueError("no ingestor follows any trade stream yet")
    return min(subscribed)
