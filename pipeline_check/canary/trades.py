"""Seeded synthetic messages in the Binance trade format, canaries and untagged background load.

A canary's content is a pure function of the seed and its sequence (and its send time, which the trace
book keeps), so the expected fields are recomputed for the fidelity diff instead of stored per message.

Canary values exercise what breaks pipelines: prices and quantities use every digit of the declared
decimal type (18 significant digits for decimal(18,8), more than float64 holds exactly, so a pipeline
that passes them through a float is caught), and every sixteenth canary carries the type's largest
value, the next its smallest positive one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline_check.canary.tags import RunId

TRADE_FIELDS = ("e", "E", "s", "t", "p", "q", "T", "m", "M")  # the keys of ``Trade.to_dict``


def decimal_text(units: int, scale: int = 8) -> str:
    """``6500010000000`` -> ``"65000.10000000"`` (Binance's fixed 8 decimals)."""
    whole, frac = divmod(units, 10**scale)
    return f"{whole}.{frac:0{scale}d}" if scale else str(whole)


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade event; ``to_json`` gives the wire form. ``seq`` is the canary's sequence (None for
    background trades)."""

    symbol: str
    trade_id: int
    price: str
    quantity: str
    buyer_is_maker: bool
    time_ms: int
    seq: int | None = None

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


def full_precision(rng: np.random.Generator, count: int, precision: int, scale: int) -> npt.NDArray[np.int64]:
    """``count`` values in units of 10**-scale that use all ``precision`` digits (the last one non-zero);
    every 16th is the type's largest value and the one after it the smallest positive one."""
    if precision > 18:
        raise ValueError(f"decimal({precision},{scale}): at most 18 digits fit the canaries' int64 units")
    top = 10**precision
    units = rng.integers(top // 10, top, size=count, dtype=np.int64)
    units += (units % 10 == 0).astype(np.int64)  # a trailing zero would hide the last digit's loss
    units[0::16] = top - 1
    units[1::16] = 1
    return units


class TradeFactory:
    """Canaries ``0..count-1`` of one run and an endless stream of background trades.

    Canary ``seq`` rides ``symbols[seq % len(symbols)]``: several symbols spread canaries over the
    partitions of a topic keyed by symbol. The arrays take 17 bytes per canary.
    """

    def __init__(
        self,
        run: RunId,
        *,
        seed: int,
        count: int,
        symbols: tuple[str, ...],
        background_symbols: tuple[str, ...] = ("BTCUSDT",),
        base_price: int = 65_000,
        precision: int = 18,
        scale: int = 8,
    ) -> None:
        self.run = run
        self.count = count
        self.scale = scale
        rng = np.random.default_rng(seed)
        self._price = full_precision(rng, count, precision, scale)
        self._qty = full_precision(rng, count, precision, scale)
        self._maker = rng.random(count) < 0.5
        self.use_symbols(symbols)
        self._background_rng = random.Random(seed ^ 0x5EED)
        self._background_symbols = background_symbols
        self._background_id = 1_000_000_000
        # background trades are declared like canaries: ``scale`` decimals, at most ``precision`` digits
        unit, self._background_top = 10**scale, 10**precision - 1
        self._background_floor = min(unit, self._background_top)  # 1.0, or the largest value that fits
        self._background_step = max(1, unit // 20)  # prices walk by up to 0.05
        self._background_qty = (max(1, unit // 100_000), min(2 * unit, self._background_top))  # 0.00001 to 2.0
        self._background_price = min(base_price * unit, self._background_top)

    def use_symbols(self, symbols: tuple[str, ...]) -> None:
        """Ride canaries on ``symbols`` (chosen once the partitions are known, before injection)."""
        if not 0 < len(symbols) <= 255:
            raise ValueError(f"1 to 255 canary symbols, not {len(symbols)}")
        self.symbols = symbols
        self.symbol_index = (np.arange(self.count) % len(symbols)).astype(np.uint8)

    def canary(self, seq: int, time_ms: int) -> Trade:
        """The ``seq``-th canary as sent at ``time_ms``."""
        return Trade(
            symbol=self.symbols[self.symbol_index[seq]],
            trade_id=self.run.tag(seq),
            price=decimal_text(int(self._price[seq]), self.scale),
            quantity=decimal_text(int(self._qty[seq]), self.scale),
            buyer_is_maker=bool(self._maker[seq]),
            time_ms=time_ms,
            seq=seq,
        )

    def background(self, time_ms: int) -> Trade:
        """The next untagged trade (ids far below the canary range), in the canaries' decimal type."""
        rng = self._background_rng
        self._background_id += 1
        step = self._background_step
        walked = self._background_price + rng.randint(-step, step)
        self._background_price = min(self._background_top, max(self._background_floor, walked))
        return Trade(
            symbol=rng.choice(self._background_symbols),
            trade_id=self._background_id,
            price=decimal_text(self._background_price, self.scale),
            quantity=decimal_text(rng.randint(*self._background_qty), self.scale),
            buyer_is_maker=rng.random() < 0.5,
            time_ms=time_ms,
        )
