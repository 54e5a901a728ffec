"""Which symbols trades ride: the ones the ingestors subscribed to (a trade for a symbol nobody follows
reaches no one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pipeline_check.canary.trades import Trade


class SymbolSpreader:
    """Deals the subscribed symbols out in turn, so trades cover every stream followed.

    ``symbols`` is asked on every trade (``FeedServer.subscribed_symbols``: the same object until the
    subscriptions change, so the order is only re-sorted after a change).
    """

    def __init__(self, symbols: Callable[[], frozenset[str]]) -> None:
        self._symbols = symbols
        self._seen: frozenset[str] = frozenset()
        self._order: list[str] = []
        self._turn = 0

    def next(self) -> str | None:
        """The next subscribed symbol in turn; None while nothing is subscribed."""
        current = self._symbols()
        if current is not self._seen:
            self._seen, self._order = current, sorted(current)
        if not self._order:
            return None
        symbol = self._order[self._turn % len(self._order)]
        self._turn += 1
        return symbol

    def route(self, trade: Trade) -> Trade:
        """``trade`` on the next subscribed symbol; unchanged while nothing is subscribed."""
        symbol = self.next()
        return trade if symbol is None or trade.symbol == symbol else dataclasses.replace(trade, symbol=symbol)

    def carrier(self, symbol: str) -> str | None:
        """The symbol whose streams carry a trade of ``symbol``: its own when some connection follows it,
        else the next subscribed one in turn (a canary on its own symbol must ride a followed stream to
        be delivered at all); None while nothing is subscribed."""
        return symbol if symbol in self._symbols() else self.next()
