"""Pure logic of the consumer: validate/normalise a Binance trade event, batch bookkeeping, DLQ envelope.

No I/O here, so it is unit-tested without Kafka or Iceberg.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
# plain decimal notation only: no sign, exponent, spaces or unicode digits
DECIMAL_RE = re.compile(r"^([0-9]+)(?:\.([0-9]+))?$")
DECIMAL_PRECISION, DECIMAL_SCALE = 18, 8
INT64_MAX = 2**63 - 1
# 9999-12-31T23:59:59.999Z: the largest ms time that is still a valid timestamp everywhere downstream
MAX_EPOCH_MS = 253_402_300_799_999
MAX_DECIMAL_TEXT = 64


class InvalidRecord(ValueError):
    """A record that must go to the DLQ; ``str(exc)`` is the reason."""


@dataclass(frozen=True, slots=True)
class Trade:
    """A validated trade event, normalised to the table's units."""

    symbol: str
    trade_id: int
    price: Decimal
    quantity: Decimal
    side: str  # "sell" when the buyer is the maker (the aggressor sold), else "buy"
    event_time_ms: int
    trade_time_ms: int


def _int(event: dict[str, Any], name: str, low: int, high: int) -> int:
    value = event.get(name)
    # bool is an int subclass in Python; JSON true is not a number
    if type(value) is not int:
        raise InvalidRecord(f"{name}: must be an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise InvalidRecord(f"{name}={value}: out of range [{low}, {high}]")
    return value


def _bool(event: dict[str, Any], name: str) -> bool:
    value = event.get(name)
    if type(value) is not bool:
        raise InvalidRecord(f"{name}: must be a boolean, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null/missing"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def parse_decimal(name: str, raw: Any) -> Decimal:
    """A decimal string > 0 that fits decimal(18,8) exactly; never rounds."""
    if not isinstance(raw, str):
        raise InvalidRecord(f"{name}: must be a decimal string, got {_kind(raw)}")
    if len(raw) > MAX_DECIMAL_TEXT:
        raise InvalidRecord(f"{name}: decimal string longer than {MAX_DECIMAL_TEXT} characters")
    match = DECIMAL_RE.match(raw)
    if match is None:
        raise InvalidRecord(f"{name}={raw!r}: not a plain decimal string")
    whole, frac = match.group(1), (match.group(2) or "")
    # trailing zeros change nothing; any other digit beyond the 8th would need rounding
    if len(frac.rstrip("0")) > DECIMAL_SCALE:
        raise InvalidRecord(f"{name}={raw!r}: more than {DECIMAL_SCALE} fractional digits (decimal(18,8))")
    if len(whole.lstrip("0")) > DECIMAL_PRECISION - DECIMAL_SCALE:
        raise InvalidRecord(f"{name}={raw!r}: too large for decimal(18,8)")
    value = Decimal(raw)
    if value <= 0:
        raise InvalidRecord(f"{name}={raw!r}: must be > 0")
    return value


def parse_trade(value: bytes | None) -> Trade:
    """Validate one raw record value; raises InvalidRecord with the reason."""
    if value is None:
        raise InvalidRecord("empty value (tombstone)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord(f"value is not UTF-8: {exc}") from None
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidRecord(f"value is not a JSON object: {type(event).__name__}")
    return parse_event(event)


def parse_event(event: dict[str, Any]) -> Trade:
    """Validate one decoded trade event (from JSON, or Avro with decimals as text and times as epoch ms)."""
    if event.get("e") != "trade":
        raise InvalidRecord(f'e: must be "trade", got {_kind(event.get("e"))}')
    symbol = event.get("s")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        raise InvalidRecord(f"s: must match {SYMBOL_RE.pattern}, got {_kind(symbol)}")
    trade_id = _int(event, "t", 0, INT64_MAX)
    event_time = _int(event, "E", 0, MAX_EPOCH_MS)
    trade_time = _int(event, "T", 0, MAX_EPOCH_MS)
    price = parse_decimal("p", event.get("p"))
    quantity = parse_decimal("q", event.get("q"))
    buyer_is_maker = _bool(event, "m")
    _bool(event, "M")
    return Trade(
        symbol=symbol,
        trade_id=trade_id,
        price=price,
        quantity=quantity,
        side="sell" if buyer_is_maker else "buy",
        event_time_ms=event_time,
        trade_time_ms=trade_time,
    )


def dlq_envelope(reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> bytes:
    """The DLQ record: the reason, where the record came from, and the original text."""
    return json.dumps(
        {
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": None if key is None else key.decode("utf-8", errors="replace"),
            "value": None if value is None else value.decode("utf-8", errors="replace"),
        },
        ensure_ascii=False,
    ).encode("utf-8")


# ----------------------------------------------------------------- batching


@dataclass(frozen=True, slots=True)
class Row:
    trade: Trade
    ingest_time_ms: int | None  # the Kafka record timestamp
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DlqRecord:
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Batch:
    """What one flush writes: rows, DLQ records and the next offsets they cover."""

    rows: list[Row] = field(default_factory=list)
    dlq: list[DlqRecord] = field(default_factory=list)
    # (topic, partition) -> next offset to consume (last consumed + 1)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing consumed since the last flush: the interval writes nothing."""
        return not self.offsets


class BatchBuffer:
    """Accumulates consumed records between flushes; ``take()`` hands a batch over and starts anew.
    ``parse`` reads a record value into a trade (JSON by default), raising InvalidRecord for the DLQ."""

    def __init__(self, parse: Callable[[bytes | None], Trade] | None = None) -> None:
        self._batch = Batch()
        self._parse = parse or parse_trade

    def __len__(self) -> int:
        return len(self._batch.rows)

    @property
    def empty(self) -> bool:
        return self._batch.empty

    def add(
        self, topic: str, partition: int, offset: int, timestamp_ms: int | None, key: bytes | None, value: bytes | None
    ) -> str | None:
        """Validate one record into the buffer; returns the DLQ reason when it is invalid."""
        reason: str | None = None
        try:
            trade = self._parse(value)
        except InvalidRecord as exc:
            reason = str(exc)
            self._batch.dlq.append(DlqRecord(key, dlq_envelope(reason, topic, partition, offset, key, value)))
        else:
            ingest = timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else None
            self._batch.rows.append(Row(trade, ingest, topic, partition, offset))
        self.advance(topic, partition, offset + 1)
        return reason

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        key = (topic, partition)
        self._batch.offsets[key] = max(next_offset, self._batch.offsets.get(key, next_offset))

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put a batch whose flush failed back in front of whatever arrived since."""
        newer = self._batch
        merged = Batch(batch.rows + newer.rows, batch.dlq + newer.dlq, dict(batch.offsets))
        for key, offset in newer.offsets.items():
            merged.offsets[key] = max(offset, merged.offsets.get(key, offset))
        self._batch = merged

    def drop_partitions(self, partitions: set[tuple[str, int]]) -> int:
        """Forget buffered records of partitions no longer ours; returns how many rows were dropped."""
        batch = self._batch
        before = len(batch.rows)
        batch.rows = [r for r in batch.rows if (r.topic, r.partition) not in partitions]
        # DLQ records are kept: producing them twice is harmless, losing them is not
        for key in partitions:
            batch.offsets.pop(key, None)
        return before - len(batch.rows)


def to_arrow(rows: list[Row], schema: pa.Schema) -> pa.Table:
    """One Arrow table for a flush, sorted by trade_id so each file's min/max stats are tight."""
    ordered = sorted(rows, key=lambda r: (r.trade.trade_id, r.trade.symbol))
    cols: dict[str, list[Any]] = {
        "symbol": [r.trade.symbol for r in ordered],
        "trade_id": [r.trade.trade_id for r in ordered],
        "price": [r.trade.price for r in ordered],
        "quantity": [r.trade.quantity for r in ordered],
        "side": [r.trade.side for r in ordered],
        "event_time": [r.trade.event_time_ms * 1000 for r in ordered],
        "trade_time": [r.trade.trade_time_ms * 1000 for r in ordered],
        "ingest_time": [None if r.ingest_time_ms is None else r.ingest_time_ms * 1000 for r in ordered],
        "kafka_partition": [r.partition for r in ordered],
        "kafka_offset": [r.offset for r in ordered],
    }
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def clamp_offset(target: int | None, begin: int, end: int) -> tuple[int, str | None]:
    """Fit a resume offset into the partition's current [begin, end] range; (offset, warning).

    Beyond the end means the topic was recreated or truncated under a table that outlived it: the
    partition's records are new, so start at its beginning. Below the beginning means retention
    deleted records that were never written: nothing to do but start at the oldest one left.
    """
    if target is None:
        return begin, None
    if target > end:
        return begin, f"resume offset {target} is beyond the log end {end} (topic recreated?)"
    if target < begin:
        return begin, f"resume offset {target} is below the log start {begin} (records deleted)"
    return target, None


class PositionGuard:
    """Which fetched records may enter the buffer, per partition.

    aiokafka starts fetching a newly assigned partition from its committed offset while the
    (async) rebalance listener is still working out where to resume; those records, and anything
    fetched before a seek took effect, must be dropped or rows could be written twice. A partition
    is accepted only once positioned, and only from its expected next offset on.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def position(self, topic: str, partition: int, offset: int) -> None:
        self._next[(topic, partition)] = offset

    def forget(self, topic: str, partition: int) -> None:
        self._next.pop((topic, partition), None)

    def clear(self) -> None:
        self._next.clear()

    def is_positioned(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._next

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to process of every positioned partition."""
        return dict(self._next)

    def accept(self, topic: str, partition: int, offset: int) -> bool:
        """True when the record is the next one to process (offsets may skip forward, never back)."""
        expected = self._next.get((topic, partition))
        if expected is None or offset < expected:
            return False
        self._next[(topic, partition)] = offset + 1
        return True


class StallWatch:
    """Which partitions a stalled Kafka client is failing, from checks every few seconds.

    A partition is stalled when records have been waiting past the offset this consumer will process
    next (the log end is beyond it) and that offset has not moved for ``after`` seconds. The offsets
    are the ones actually taken in (PositionGuard), not the client's position: the client can move
    its position past records it never handed over, and a check of its position then sees nothing.
    A client that does not answer the log-end request (while Kafka itself does) counts as not moving.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        # partition -> (next offset, when records were first seen waiting past it)
        self._waiting: dict[tuple[str, int], tuple[int, float]] = {}

    def check(
        self, taken: dict[tuple[str, int], int], ends: dict[tuple[str, int], int] | None, now: float
    ) -> list[tuple[str, int]]:
        """The stalled partitions among ``taken`` ({partition: next offset to process}); ``ends`` are the
        log end offsets, None when the client did not answer."""
        stalled = []
        for key, offset in taken.items():
            if ends is not None and ends.get(key, offset) <= offset:
                self._waiting.pop(key, None)  # nothing waiting: an idle partition is not stalled
                continue
            seen = self._waiting.get(key)
            if seen is None or seen[0] != offset:
                self._waiting[key] = (offset, now)
            elif now - seen[1] >= self.after:
                stalled.append(key)
        for key in set(self._waiting) - set(taken):
            del self._waiting[key]
        return stalled

    def reset(self) -> None:
        """Forget what was seen (new clients, or fetching stopped on purpose)."""
        self._waiting.clear()


def resume_offset(snapshot_offset: int | None, committed: int | None, *, unsafe: bool) -> int | None:
    """Where a newly assigned partition resumes; None = the reset policy (earliest).

    Every offset below the snapshot's is in the table (or in the DLQ, produced before the commit).
    Every committed offset is one the writer reached after an Iceberg commit succeeded, or after a
    flush of only DLQ records (those write no snapshot), so both are safe positions and the later
    one avoids re-sending DLQ'd records. The unsafe test knob ignores the snapshot entirely.
    """
    if unsafe:
        return committed
    candidates = [o for o in (snapshot_offset, committed) if o is not None]
    return max(candidates) if candidates else None
