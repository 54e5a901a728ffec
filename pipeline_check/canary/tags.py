"""Canary tags: a run id and a sequence number packed into one int64, time-ordered, parseable back.

The tag rides in the message's trade id (Binance field ``t``, Iceberg column ``trade_id``), a field
every stage keeps. Layout, most significant first::

    bit 63      0 (the value stays a positive int64)
    bit 62      1 (canary marker: real trade ids are far below 2**62)
    bits 26-61  run id: centiseconds since 2025-01-01 UTC when the run started (~21 years of range)
    bits 0-25   sequence within the run (up to 67,108,863 canaries per run)

A later run has a larger run id, and a later canary a larger sequence, so tags grow with time and the
min/max statistics of table files let a filter on one run's tag range skip every other file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

CANARY_BIT = 1 << 62
SEQ_BITS = 26
RUN_BITS = 36
MAX_SEQ = (1 << SEQ_BITS) - 1
MAX_RUN = (1 << RUN_BITS) - 1
EPOCH_S = 1_735_689_600  # 2025-01-01T00:00:00Z


@dataclass(frozen=True, slots=True, order=True)
class RunId:
    """Identifies one validation run; its tags are ``[lo, hi]``."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_RUN:
            raise ValueError(f"run id {self.value} outside 0..{MAX_RUN}")

    @classmethod
    def new(cls, now: float | None = None) -> RunId:
        """A run id from the wall clock (centisecond resolution)."""
        now = time.time() if now is None else now
        return cls(int((now - EPOCH_S) * 100))

    @property
    def lo(self) -> int:
        return CANARY_BIT | (self.value << SEQ_BITS)

    @property
    def hi(self) -> int:
        return self.lo | MAX_SEQ

    def tag(self, seq: int) -> int:
        """The tag of the ``seq``-th canary of this run."""
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"sequence {seq} outside 0..{MAX_SEQ}")
        return self.lo | seq

    def seq_of(self, tag: int) -> int | None:
        """The sequence of ``tag`` if it belongs to this run, else None."""
        return tag & MAX_SEQ if self.lo <= tag <= self.hi else None

    @property
    def started_at(self) -> float:
        """Wall-clock seconds the run id was taken from."""
        return EPOCH_S + self.value / 100

    def __str__(self) -> str:
        return f"run-{self.value:x}"


def parse(tag: int) -> tuple[RunId, int] | None:
    """``(run, seq)`` of any canary tag, or None for a value that is not one."""
    if tag >> 63 or not tag & CANARY_BIT:
        return None
    return RunId((tag >> SEQ_BITS) & MAX_RUN), tag & MAX_SEQ


def label(tag: int) -> str:
    """Human form for reports, e.g. ``run-1a2b3c4d#17``; the raw number when not a canary."""
    parsed = parse(tag)
    return str(tag) if parsed is None else f"{parsed[0]}#{parsed[1]}"
