"""Deliberate faults of the reference pipeline: the pure logic of its UNSAFE_* switches.

Every switch is off by default; with all of them off nothing here changes a row or a page. They
exist so pipeline-check can be shown a pipeline that loses, duplicates, alters or hides data and be
expected to say exactly which checks fail. Which records a fault hits is decided by a keyed hash of
the trade id, so a run's loss or duplication is the same every time the same trades are sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from .common import env_bool, env_float, env_int, env_optional_int
from .trades import DECIMAL_SCALE, MAX_EPOCH_MS, Row, Trade

DROP_KEY = b"drop"
DUPLICATE_KEY = b"duplicate"
# the largest decimal(18,8)
MAX_DECIMAL = Decimal("9999999999.99999999")
_SCALE = Decimal(1).scaleb(-DECIMAL_SCALE)
# ten years: a shift beyond that is a typo, not a clock fault
MAX_SHIFT_MS = 10 * 365 * 86_400_000


def hash_fraction(trade_id: int, key: bytes) -> float:
    """A number in [0, 1) fixed by the trade id (and ``key``, so two faults pick independent ids)."""
    digest = hashlib.blake2b(trade_id.to_bytes(8, "big"), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") / 2**64


def picked(trade_id: int, fraction: float, key: bytes) -> bool:
    """True for about ``fraction`` of all trade ids, always the same ones."""
    return fraction > 0 and hash_fraction(trade_id, key) < fraction


def round_price(price: Decimal, decimals: int) -> Decimal:
    """The price rounded half-even to ``decimals`` places (a lossy column or cast), kept within
    decimal(18,8): the largest price would round up past it and wedge every flush."""
    return min(price.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN), MAX_DECIMAL)


def through_float64(value: Decimal) -> Decimal:
    """The decimal(18,8) a double column hands back: float64 keeps 15-17 significant digits, so
    65000.10 survives and 1234567890.12345678 comes back as 1234567890.12345672."""
    return min(Decimal(float(value)).quantize(_SCALE, rounding=ROUND_HALF_EVEN), MAX_DECIMAL)


def shift_ms(epoch_ms: int, shift: int) -> int:
    """``epoch_ms`` moved by ``shift``, kept within the timestamps the table can hold."""
    return min(max(epoch_ms + shift, 0), MAX_EPOCH_MS)


@dataclass(frozen=True, slots=True)
class ConsumerFaults:
    """The consumer's UNSAFE_* switches (see the consumer module docstring)."""

    drop_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    drop_partition: int | None = None
    stall_partition: int | None = None
    round_price_decimals: int | None = None
    float_prices: bool = False
    shift_time_ms: int = 0
    reappend_after_ms: int | None = None
    never_commit: bool = False

    @classmethod
    def from_env(cls, partitions: int, env: Mapping[str, str] | None = None) -> ConsumerFaults:
        """Read the switches; ``partitions`` (RAW_TOPIC_PARTITIONS) bounds the partition numbers."""
        last = partitions - 1
        return cls(
            drop_fraction=env_float("UNSAFE_DROP_FRACTION", 0.0, minimum=0.0, maximum=1.0, env=env),
            duplicate_fraction=env_float("UNSAFE_DUPLICATE_FRACTION", 0.0, minimum=0.0, maximum=1.0, env=env),
            drop_partition=env_optional_int("UNSAFE_DROP_PARTITION", minimum=0, maximum=last, env=env),
            stall_partition=env_optional_int("UNSAFE_STALL_PARTITION", minimum=0, maximum=last, env=env),
            round_price_decimals=env_optional_int(
                "UNSAFE_ROUND_PRICE_DECIMALS", minimum=0, maximum=DECIMAL_SCALE - 1, env=env
            ),
            float_prices=env_bool("UNSAFE_FLOAT_PRICES", False, env=env),
            shift_time_ms=env_int("UNSAFE_SHIFT_TIME_MS", 0, minimum=-MAX_SHIFT_MS, maximum=MAX_SHIFT_MS, env=env),
            reappend_after_ms=env_optional_int("UNSAFE_REAPPEND_AFTER_MS", minimum=1, maximum=600_000, env=env),
            never_commit=env_bool("UNSAFE_NEVER_COMMIT", False, env=env),
        )

    def warnings(self) -> list[str]:
        """One line per switch that is on, for the WARNING log at start."""
        lines = []
        if self.drop_fraction:
            lines.append(f"UNSAFE_DROP_FRACTION={self.drop_fraction:g}: that share of trades is never written")
        if self.duplicate_fraction:
            lines.append(
                f"UNSAFE_DUPLICATE_FRACTION={self.duplicate_fraction:g}: that share of trades is written twice"
            )
        if self.drop_partition is not None:
            lines.append(f"UNSAFE_DROP_PARTITION={self.drop_partition}: its trades are never written")
        if self.stall_partition is not None:
            lines.append(f"UNSAFE_STALL_PARTITION={self.stall_partition}: never fetched, its offsets never move")
        if self.round_price_decimals is not None:
            lines.append(f"UNSAFE_ROUND_PRICE_DECIMALS={self.round_price_decimals}: prices are rounded")
        if self.float_prices:
            lines.append("UNSAFE_FLOAT_PRICES=1: prices pass through float64")
        if self.shift_time_ms:
            lines.append(f"UNSAFE_SHIFT_TIME_MS={self.shift_time_ms}: event and trade times are shifted")
        if self.reappend_after_ms is not None:
            lines.append(
                f"UNSAFE_REAPPEND_AFTER_MS={self.reappend_after_ms}: the last batch is appended again once "
                "the stream has been quiet that long"
            )
        if self.never_commit:
            lines.append("UNSAFE_NEVER_COMMIT=1: Kafka offsets are never committed")
        return [f"{line} (a deliberate fault, never for real use)" for line in lines]

    @property
    def alters_rows(self) -> bool:
        return bool(
            self.drop_fraction
            or self.duplicate_fraction
            or self.drop_partition is not None
            or self.round_price_decimals is not None
            or self.float_prices
            or self.shift_time_ms
        )

    def alter(self, trade: Trade) -> Trade:
        """The trade as the faulty consumer writes it."""
        price = trade.price
        if self.round_price_decimals is not None:
            price = round_price(price, self.round_price_decimals)
        if self.float_prices:
            price = through_float64(price)
        return dataclasses.replace(
            trade,
            price=price,
            event_time_ms=shift_ms(trade.event_time_ms, self.shift_time_ms),
            trade_time_ms=shift_ms(trade.trade_time_ms, self.shift_time_ms),
        )

    def apply(self, rows: list[Row]) -> list[Row]:
        """The rows a flush writes for a batch; ``rows`` itself when no switch touches rows."""
        if not self.alters_rows:
            return rows
        written = []
        for row in rows:
            trade_id = row.trade.trade_id
            if row.partition == self.drop_partition or picked(trade_id, self.drop_fraction, DROP_KEY):
                continue
            altered = dataclasses.replace(row, trade=self.alter(row.trade))
            written.append(altered)
            if picked(trade_id, self.duplicate_fraction, DUPLICATE_KEY):
                written.append(altered)
        return written


# ------------------------------------------------------------------ query API


@dataclass(frozen=True, slots=True)
class ApiFaults:
    """The query API's UNSAFE_* switches (see the api module docstring)."""

    oldest_first: bool = False
    page_cap: int | None = None

    @classmethod
    def from_env(cls, max_limit: int, env: Mapping[str, str] | None = None) -> ApiFaults:
        return cls(
            oldest_first=env_bool("UNSAFE_API_OLDEST_FIRST", False, env=env),
            page_cap=env_optional_int("UNSAFE_API_PAGE_CAP", minimum=1, maximum=max_limit, env=env),
        )

    def warnings(self) -> list[str]:
        lines = []
        if self.oldest_first:
            lines.append("UNSAFE_API_OLDEST_FIRST=1: pages run oldest first")
        if self.page_cap is not None:
            lines.append(f"UNSAFE_API_PAGE_CAP={self.page_cap}: pages are silently cut to that many rows")
        return [f"{line} (a deliberate fault, never for real use)" for line in lines]

    def order_by(self) -> str:
        """Newest first (trade_time, then trade_id, descending) unless the switch turns it around."""
        direction = "ASC" if self.oldest_first else "DESC"
        return f"ORDER BY trade_time {direction}, trade_id {direction}"

    def page_size(self, limit: int) -> int:
        """How many rows a page really holds for the ``limit`` asked."""
        return limit if self.page_cap is None else min(limit, self.page_cap)
