"""Canary symbols that cover every partition of a topic keyed by symbol, and whether canaries landed where
they were steered.

An ingestor picks the record key, and keys by symbol more often than not; its client's key partitioner then
maps one symbol to one partition (murmur2 for the Java client and aiokafka, CRC32 for librdkafka, FNV-1a for
Sarama). Canaries on a single symbol would leave every other partition unwatched, so the canary symbol is
extended (``CANARYUSDT``, ``CANARYUSDT1``, ...) until the symbols land on every partition under each
partitioner the topic may use (:class:`Placement`, worked out by the stage's probe).

Where canaries cannot be steered (a producer that ignores keys, keys the validator does not control, no
partitioner that fits), coverage is judged from where canaries landed and the placement says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_TRIES = 10_000
MAX_SYMBOLS = 255  # what a TradeFactory rides canaries on
AGREE = 0.95  # the share of canaries that must land where their symbol says for the steering to have worked

Place = Callable[[str, int], int]  # (symbol, partitions) -> partition


def partition_of(key: str, partitions: int) -> int:
    """The partition the standard key partitioner (murmur2, Java's and aiokafka's default) gives ``key``."""
    from aiokafka.partitioner import murmur2  # only where a topic is probed: a run imports what it uses

    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Placement:
    """How a topic's producer places a record keyed by a canary's symbol, as far as the validator can tell.

    ``places``: each partitioner the topic may use, by name (one when known, several when the records could not
    tell them apart); empty when canaries cannot be steered, and ``unsteered`` then says why. ``finding`` is what
    was found and how sure (for the run's notes)."""

    partitions: int
    places: tuple[tuple[str, Place], ...]
    finding: str = ""
    unsteered: str = ""

    @classmethod
    def standard(cls, partitions: int) -> Placement:
        """A stage that says nothing of its placement: the standard key partitioner."""
        return cls(partitions, (("murmur2", partition_of),))

    @property
    def names(self) -> str:
        return " and ".join(name for name, _ in self.places)


def covering_symbols(base: str, placement: Placement) -> tuple[str, ...]:
    """``base`` and as many derived symbols as it takes for one on each partition under every partitioner of
    ``placement`` (as many as fit :data:`MAX_SYMBOLS`, the first partitioner's first); just ``base`` when
    canaries cannot be steered."""
    n = placement.partitions
    if not placement.places:
        return (base,)
    fitting = placement.places[: max(1, MAX_SYMBOLS // n)]
    wanted = {(i, p) for i in range(len(fitting)) for p in range(n)}
    chosen: list[str] = []
    for i in range(MAX_TRIES):
        symbol = base if i == 0 else f"{base}{i}"
        covers = {(k, place(symbol, n)) for k, (_, place) in enumerate(fitting)} & wanted
        if covers:
            chosen.append(symbol)
            wanted -= covers
        if not wanted:
            break
    return tuple(chosen[:MAX_SYMBOLS])


def landing(
    stage: str,
    placement: Placement,
    symbols: tuple[str, ...],
    symbol_index: npt.NDArray[np.uint8],
    shard_of: npt.NDArray[np.int32],
) -> str:
    """Whether canaries landed where ``placement`` put their symbols (``shard_of``: each canary's partition at
    ``stage``, -1 where it was not seen): a caveat for the coverage check when they did not, else why they
    could not be steered ("" when they could and did)."""
    if not placement.places:
        return placement.unsteered
    seen = shard_of >= 0
    total = int(seen.sum())
    if not total:
        return placement.unsteered
    expected = np.array([[place(s, placement.partitions) for s in symbols] for _, place in placement.places])
    index = symbol_index[: len(shard_of)][seen]
    agree = int((expected[:, index] == shard_of[seen]).any(axis=0).sum())
    if agree >= AGREE * total:
        return placement.unsteered
    return (
        f"{total - agree} of {total} canaries did not land where {placement.names} puts their symbol: the "
        "pipeline keys records by something the validator does not control (not the symbol) or places them "
        f"another way, so coverage is judged from where canaries landed; set stages.{stage}.partitioner "
        "if the producer's partitioner is known"
    )
