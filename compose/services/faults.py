"""Deliberate faults of the reference pipeline: the pure logic of its UNSAFE_* switches.

Every switch is off by default; with all of them off nothing here changes a row or a page. They
exist so pipeline-check can be shown a pipeline that loses, duplicates, alters or hides data and be
expected to say exactly which checks fail. Which records a fault hits is decided by a keyed hash of
the trade id, so a run's loss or duplication is the same every time the same trades are sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

from .common import env_bool, env_float, env_int, env_optional_int, fail
from .trades import DECIMAL_SCALE, MAX_EPOCH_MS, Row, Trade

DROP_KEY = b"drop"
DUPLICATE_KEY = b"duplicate"
KEEP_KEY = b"keep"
REWRITE_KEY = b"rewrite"
DELETE_KEY = b"delete"
RETRACT_KEY = b"retract"
# the largest decimal(18,8)
MAX_DECIMAL = Decimal("9999999999.99999999")
_SCALE = Decimal(1).scaleb(-DECIMAL_SCALE)
# ten years: a shift beyond that is a typo, not a clock fault
MAX_SHIFT_MS = 10 * 365 * 86_400_000
# the longest delay of a late change (rewrite, delete, restore, API retraction): ten minutes
MAX_DELAY_MS = 600_000


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


def kept(trade_id: int, n: int) -> bool:
    """True for one trade id in every ``n`` consecutive ones (ids ``k*n`` .. ``k*n + n - 1``), which one
    chosen by a keyed hash of ``k``: exactly a ``1/n`` share of any run of consecutive ids, without a
    fixed stride that could line up with how a sender spreads ids over symbols or partitions."""
    return trade_id % n == int(hash_fraction(trade_id // n, KEEP_KEY) * n)


def wrong_price(price: Decimal) -> Decimal:
    """A price that differs from ``price`` by one unit, within decimal(18,8)."""
    return price + 1 if price + 1 <= MAX_DECIMAL else price - 1


def _delay_ms(name: str, default: int, needs: str, on: bool, env: Mapping[str, str] | None) -> int:
    """A fault's delay in ms (``default`` when unset); set without the switch ``needs`` it is a mistake."""
    value = env_optional_int(name, minimum=0, maximum=MAX_DELAY_MS, env=env)
    if value is not None and not on:
        fail(name, str(value), f"has no effect without {needs}; set {needs} too, or unset {name}")
    return default if value is None else value


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
    keep_every_n: int | None = None
    rewrite_fraction: float = 0.0
    rewrite_after_ms: int = 2000
    delete_fraction: float = 0.0
    delete_after_ms: int = 2000
    restore_after_ms: int = 3000

    @classmethod
    def from_env(cls, partitions: int, env: Mapping[str, str] | None = None) -> ConsumerFaults:
        """Read the switches; ``partitions`` (RAW_TOPIC_PARTITIONS) bounds the partition numbers."""
        last = partitions - 1
        rewrite = env_float("UNSAFE_REWRITE_FRACTION", 0.0, minimum=0.0, maximum=1.0, env=env)
        delete = env_float("UNSAFE_DELETE_FRACTION", 0.0, minimum=0.0, maximum=1.0, env=env)
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
            keep_every_n=env_optional_int("UNSAFE_KEEP_EVERY_N", minimum=2, maximum=1_000_000, env=env),
            rewrite_fraction=rewrite,
            rewrite_after_ms=_delay_ms("UNSAFE_REWRITE_AFTER_MS", 2000, "UNSAFE_REWRITE_FRACTION", bool(rewrite), env),
            delete_fraction=delete,
            delete_after_ms=_delay_ms("UNSAFE_DELETE_AFTER_MS", 2000, "UNSAFE_DELETE_FRACTION", bool(delete), env),
            restore_after_ms=_delay_ms("UNSAFE_RESTORE_AFTER_MS", 3000, "UNSAFE_DELETE_FRACTION", bool(delete), env),
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
        if self.keep_every_n is not None:
            lines.append(
                f"UNSAFE_KEEP_EVERY_N={self.keep_every_n}: one trade in {self.keep_every_n} is written, "
                "the others are acknowledged and lost"
            )
        if self.rewrite_fraction:
            lines.append(
                f"UNSAFE_REWRITE_FRACTION={self.rewrite_fraction:g}: that share of committed trades is rewritten "
                f"with a wrong price {self.rewrite_after_ms} ms later"
            )
        if self.delete_fraction:
            lines.append(
                f"UNSAFE_DELETE_FRACTION={self.delete_fraction:g}: that share of committed trades is deleted "
                f"{self.delete_after_ms} ms later and appended again {self.restore_after_ms} ms after that"
            )
        return [f"{line} (a deliberate fault, never for real use)" for line in lines]

    @property
    def alters_rows(self) -> bool:
        return bool(
            self.drop_fraction
            or self.keep_every_n is not None
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
            if self.keep_every_n is not None and not kept(trade_id, self.keep_every_n):
                continue
            altered = dataclasses.replace(row, trade=self.alter(row.trade))
            written.append(altered)
            if picked(trade_id, self.duplicate_fraction, DUPLICATE_KEY):
                written.append(altered)
        return written


class LateKind(StrEnum):
    REWRITE = "rewrite"  # the rows again, each with a wrong price, replacing the committed ones
    DELETE = "delete"  # the rows deleted from the table
    RESTORE = "restore"  # deleted rows appended again


@dataclass(frozen=True, slots=True)
class LateChange:
    """A change a fault makes to rows the consumer committed earlier."""

    kind: LateKind
    rows: tuple[Row, ...]


class LateChanges:
    """The consumer's late changes (UNSAFE_REWRITE_*, UNSAFE_DELETE_*), in the order they fall due.

    Times are the caller's monotonic seconds. Pending changes live in memory only: a consumer that
    stops before they fall due never makes them (a deleted row not yet restored stays deleted).
    """

    def __init__(self, faults: ConsumerFaults) -> None:
        self._faults = faults
        self._queue: list[tuple[float, int, LateChange]] = []
        self._order = itertools.count()
        self._applying = 0  # handed out by due(), not yet done()

    def __len__(self) -> int:
        """Changes still to be made: scheduled, or handed out and not yet in the table."""
        return len(self._queue) + self._applying

    def committed(self, rows: Sequence[Row], now: float) -> None:
        """Schedule what the faults do to ``rows``, just committed."""
        faults = self._faults
        if not (faults.rewrite_fraction or faults.delete_fraction):
            return
        rewrite = tuple(
            dataclasses.replace(r, trade=dataclasses.replace(r.trade, price=wrong_price(r.trade.price)))
            for r in rows
            if picked(r.trade.trade_id, faults.rewrite_fraction, REWRITE_KEY)
        )
        if rewrite:
            self._push(now + faults.rewrite_after_ms / 1000, LateChange(LateKind.REWRITE, rewrite))
        delete = tuple(r for r in rows if picked(r.trade.trade_id, faults.delete_fraction, DELETE_KEY))
        if delete:
            self._push(now + faults.delete_after_ms / 1000, LateChange(LateKind.DELETE, delete))

    def due(self, now: float) -> list[LateChange]:
        """The changes due by ``now``, oldest first, handed out to be made (each then reported to ``done``)."""
        ready = []
        while self._queue and self._queue[0][0] <= now:
            ready.append(heapq.heappop(self._queue)[2])
        self._applying += len(ready)
        return ready

    def done(self, change: LateChange, now: float, *, applied: bool = True) -> None:
        """``change`` is in the table (or, not ``applied``, given up): an applied delete schedules its restore."""
        self._applying -= 1
        if applied and change.kind is LateKind.DELETE:
            self._push(now + self._faults.restore_after_ms / 1000, LateChange(LateKind.RESTORE, change.rows))

    def _push(self, due: float, change: LateChange) -> None:
        heapq.heappush(self._queue, (due, next(self._order), change))


# ------------------------------------------------------------------ query API


@dataclass(frozen=True, slots=True)
class ApiFaults:
    """The query API's UNSAFE_* switches (see the api module docstring)."""

    oldest_first: bool = False
    page_cap: int | None = None
    price_order: bool = False
    ignore_end_time: bool = False
    retract_fraction: float = 0.0
    retract_after_ms: int = 2000

    @classmethod
    def from_env(cls, max_limit: int, env: Mapping[str, str] | None = None) -> ApiFaults:
        oldest_first = env_bool("UNSAFE_API_OLDEST_FIRST", False, env=env)
        price_order = env_bool("UNSAFE_API_PRICE_ORDER", False, env=env)
        if oldest_first and price_order:
            fail(
                "UNSAFE_API_PRICE_ORDER",
                "1",
                "orders pages by price, UNSAFE_API_OLDEST_FIRST=1 by time: set one of them, not both",
            )
        retract = env_float("UNSAFE_API_RETRACT_FRACTION", 0.0, minimum=0.0, maximum=1.0, env=env)
        return cls(
            oldest_first=oldest_first,
            page_cap=env_optional_int("UNSAFE_API_PAGE_CAP", minimum=1, maximum=max_limit, env=env),
            price_order=price_order,
            ignore_end_time=env_bool("UNSAFE_API_IGNORE_END_TIME", False, env=env),
            retract_fraction=retract,
            retract_after_ms=_delay_ms(
                "UNSAFE_API_RETRACT_AFTER_MS", 2000, "UNSAFE_API_RETRACT_FRACTION", bool(retract), env
            ),
        )

    def warnings(self) -> list[str]:
        lines = []
        if self.oldest_first:
            lines.append("UNSAFE_API_OLDEST_FIRST=1: pages run oldest first")
        if self.page_cap is not None:
            lines.append(f"UNSAFE_API_PAGE_CAP={self.page_cap}: pages are silently cut to that many rows")
        if self.price_order:
            lines.append("UNSAFE_API_PRICE_ORDER=1: pages are ordered by price, highest first, not by time")
        if self.ignore_end_time:
            lines.append("UNSAFE_API_IGNORE_END_TIME=1: end_time is ignored, answers run from start_time on")
        if self.retract_fraction:
            lines.append(
                f"UNSAFE_API_RETRACT_FRACTION={self.retract_fraction:g}: that share of trades is no longer "
                f"returned {self.retract_after_ms} ms after it was first returned"
            )
        return [f"{line} (a deliberate fault, never for real use)" for line in lines]

    def order_by(self) -> str:
        """Newest first (trade_time, then trade_id, descending) unless a switch says otherwise. Columns are
        those of the table aliased ``src``: the answer's own columns of the same names may be text."""
        if self.price_order:
            return "ORDER BY src.price DESC, src.trade_id DESC"
        direction = "ASC" if self.oldest_first else "DESC"
        return f"ORDER BY src.trade_time {direction}, src.trade_id {direction}"

    def page_size(self, limit: int) -> int:
        """How many rows a page really holds for the ``limit`` asked."""
        return limit if self.page_cap is None else min(limit, self.page_cap)

    def end_time(self, end: int | None) -> int | None:
        """The end of the window the query really applies."""
        return None if self.ignore_end_time else end


@dataclass(slots=True)
class Retractions:
    """UNSAFE_API_RETRACT_*: a picked trade is no longer returned once ``after_ms`` have passed since the
    API first returned it. Kept in memory (an API restart returns every trade again); thread-safe, as
    requests are answered on a thread pool. Times are monotonic seconds."""

    fraction: float
    after_ms: int
    _first: dict[str, dict[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, faults: ApiFaults) -> Retractions:
        return cls(faults.retract_fraction, faults.retract_after_ms)

    def fetch_size(self, symbol: str, page: int) -> int:
        """Rows to read for a page of ``page`` rows: enough that hiding retracted ones leaves a full page."""
        if not self.fraction:
            return page
        with self._lock:
            return page + len(self._first.get(symbol, ()))

    def shown(self, symbol: str, rows: list[dict[str, Any]], page: int, now: float) -> list[dict[str, Any]]:
        """The rows an answer shows (at most ``page``): retracted ones left out, first sightings noted."""
        if not self.fraction:
            return rows if len(rows) <= page else rows[:page]
        after = self.after_ms / 1000
        shown = []
        with self._lock:
            first = self._first.setdefault(symbol, {})
            for row in rows:
                if len(shown) == page:
                    break
                trade_id = row["trade_id"]
                if picked(trade_id, self.fraction, RETRACT_KEY) and now - first.setdefault(trade_id, now) > after:
                    continue
                shown.append(row)
        return shown
