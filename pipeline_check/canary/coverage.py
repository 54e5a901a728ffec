"""Canary symbols that cover every partition of a topic keyed by symbol.

An ingestor picks the record key, and keys by symbol more often than not; the standard Kafka key
partitioner (murmur2, as Java's and aiokafka's default) then maps one symbol to one partition. Canaries
on a single symbol would leave every other partition unwatched, so the canary symbol is extended
(``CANARYUSDT``, ``CANARYUSDT1``, ...) until the symbols land on every partition.
"""

from __future__ import annotations

MAX_TRIES = 10_000


def partition_of(key: str, partitions: int) -> int:
    """The partition the standard key partitioner gives ``key``."""
    from aiokafka.partitioner import murmur2  # only where a topic is probed: a run imports what it uses

    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def covering_symbols(base: str, partitions: int) -> tuple[str, ...]:
    """``base`` and as many derived symbols as it takes for one on each of ``partitions`` partitions,
    in partition order."""
    chosen: dict[int, str] = {}
    for i in range(MAX_TRIES):
        symbol = base if i == 0 else f"{base}{i}"
        chosen.setdefault(partition_of(symbol, partitions), symbol)
        if len(chosen) == partitions:
            break
    return tuple(chosen[p] for p in sorted(chosen))
