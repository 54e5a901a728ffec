"""Seeded synthetic messages in the Binance trade format, canaries and untagged background load.

A canary's content is a pure function of the seed and its sequence (and its send time, which the trace
book keeps), so the expected fields are recomputed for the fidelity diff instead of stored per message.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline_check.tags import RunId

SCALE = 10**8  # Binance sends prices and quantities with 8 decimals


def decimal_text(units: int) -> str:
    """``6500010000000`` -> ``"65000.10000000"`` (Binance's fixed 8 decimals)."""
    return f"{units // SCALE}.{units % SCALE:08d}"


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade event; ``to_json`` gives the wire form."""

    symbol: str
    trade_id: int
    price: str
    quantity: str
    buyer_is_maker: bool
    time_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "e": "trade",
            "E": self.time_ms,
            "s": self.symbol,
            "t": self.trade_id,
            "p": self.price,
            "q": self.quantity,
            "T": self.time_ms,
            "m": self.buyer_is_maker,
            "M": True,
        }

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), separators=(",", ":"))``, formatted directly (the injectors call
        this once per message; it is several times faster) unless a string needs escaping."""
        text = self.symbol + self.price + self.quantity
        if not (text.isascii() and text.isprintable()) or '"' in text or "\\" in text:
            return json.dumps(self.to_dict(), separators=(",", ":"))
        m = "true" if self.buyer_is_maker else "false"
        return (
            f'{{"e":"trade","E":{self.time_ms},"s":"{self.symbol}","t":{self.trade_id},"p":"{self.price}",'
            f'"q":"{self.quantity}","T":{self.time_ms},"m":{m},"M":true}}'
        )


class TradeFactory:
    """Canaries ``0..count-1`` of one run and an endless stream of background trades.

    Prices follow a seeded random walk around ``base_price``; the arrays take 17 bytes per canary.
    """

    def __init__(
        self,
        run: RunId,
        *,
        seed: int,
        count: int,
        symbol: str,
        background_symbols: tuple[str, ...] = ("BTCUSDT",),
        base_price: int = 65_000,
    ) -> None:
        self.run = run
        self.symbol = symbol
        self.count = count
        rng = np.random.default_rng(seed)
        walk = np.cumsum(rng.integers(-5_000_000, 5_000_001, size=count, dtype=np.int64))
        self._price = np.maximum(base_price * SCALE + walk, 1)
        self._qty = rng.integers(1_000, 2 * SCALE, size=count, dtype=np.int64)
        self._maker = rng.random(count) < 0.5
        self._background_rng = random.Random(seed ^ 0x5EED)
        self._background_symbols = background_symbols
        self._background_id = 1_000_000_000
        self._background_price = base_price * SCALE

    def canary(self, seq: int, time_ms: int) -> Trade:
        """The ``seq``-th canary as sent at ``time_ms``."""
        return Trade(
            symbol=self.symbol,
            trade_id=self.run.tag(seq),
            price=decimal_text(int(self._price[seq])),
            quantity=decimal_text(int(self._qty[seq])),
            buyer_is_maker=bool(self._maker[seq]),
            time_ms=time_ms,
        )

    def background(self, time_ms: int) -> Trade:
        """The next untagged trade (ids far below the canary range)."""
        rng = self._background_rng
        self._background_id += 1
        self._background_price = max(SCALE, self._background_price + rng.randint(-5_000_000, 5_000_000))
        return Trade(
            symbol=rng.choice(self._background_symbols),
            trade_id=self._background_id,
            price=decimal_text(self._background_price),
            quantity=decimal_text(rng.randint(1_000, 2 * SCALE)),
            buyer_is_maker=rng.random() < 0.5,
            time_ms=time_ms,
        )
