"""The key partitioners of Kafka's client families, and which one a topic's producer uses (``partitioner``).

Each maps a record key to a partition exactly as its client does (checked against the clients' code):

- ``murmur2``: the Java client's and aiokafka's default, librdkafka's ``murmur2``/``murmur2_random``:
  ``(murmur2(key) & 0x7fffffff) % n``;
- ``crc32``: librdkafka's ``consistent`` and its default ``consistent_random`` (confluent-kafka and every client
  built on librdkafka) for a non-empty key: ``crc32(key) % n`` (unsigned; an empty or null key is placed at
  random, or on partition 0 by ``consistent``);
- ``fnv1a``: Go's Sarama default (``NewHashPartitioner``) and librdkafka's ``fnv1a``: the 32-bit FNV-1a hash read
  as a signed int32, its absolute value (2**31 for the smallest) modulo n;
- ``round_robin``: the producer ignores keys (kafka-go's default, a sticky or random partitioner): canaries cannot
  be steered, and coverage is judged from where they landed.

``auto`` (the default) reads the newest records of each partition and keeps the partitioners that place at
least 95 % of the keyed ones where they are (:func:`infer`): one is the answer, with the odds of a coincidence;
several (too few keys to tell them apart) are all steered for; none means canaries cannot be steered, and the
finding says whether keys spread over partitions (round robin) or keep one no known hash gives.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal

from aiokafka import TopicPartition

from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.canary.coverage import Place, Placement

Partitioner = Literal["auto", "murmur2", "crc32", "fnv1a", "consistent_random", "round_robin"]
AGREE = 0.95  # a partitioner fits when it places this share of the keyed records where they are
MIN_RECORDS = 20  # fewer keyless records than this tell nothing (a stray record, a test message)
SAMPLE = 2_000  # records read at most, the newest of each partition
PER_PARTITION = 50
EVERY = "murmur2, crc32 and fnv1a alike"
JUDGED = "coverage is judged from where they landed"


def murmur2(key: bytes, partitions: int) -> int:
    from aiokafka.partitioner import murmur2 as hashed

    return (int(hashed(key)) & 0x7FFFFFFF) % partitions


def crc32(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def fnv1a(key: bytes, partitions: int) -> int:
    h = 0x811C9DC5
    for byte in key:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return abs(h - (1 << 32) if h & 0x80000000 else h) % partitions


HASHES: dict[str, Callable[[bytes, int], int]] = {"murmur2": murmur2, "crc32": crc32, "fnv1a": fnv1a}


def _place(name: str) -> tuple[str, Place]:
    hashed = HASHES[name]
    return name, lambda symbol, partitions: hashed(symbol.encode(), partitions)


ALL = tuple(_place(name) for name in HASHES)


def configured(partitioner: Partitioner, partitions: int, setting: str) -> Placement:
    """The placement a configured (not ``auto``) partitioner gives."""
    if partitioner == "round_robin":
        why = f"{setting} = round_robin: the producer ignores keys, so canaries cannot be steered to partitions"
        return Placement(partitions, (), why, f"{why}; coverage is judged from where they landed")
    name = "crc32" if partitioner == "consistent_random" else partitioner
    return Placement(partitions, (_place(name),), f"{setting} = {partitioner}: canaries keyed by symbol land by {name}")


async def sample(reader: RecordReader) -> list[tuple[bytes | None, int]]:
    """(key, partition) of the newest records of every partition (a started reader)."""
    per = max(5, min(PER_PARTITION, SAMPLE // max(1, len(reader.partitions))))
    ends, begins = await reader.ends(), await reader.begins()
    ranges = {tp: (max(begins[tp], end - per), end) for tp, end in ends.items()}
    found = await reader.read(ranges)
    return [(r.key, tp.partition) for tp, records in found.items() for r in records]


async def topic_placement(
    partitioner: Partitioner, bootstrap: str, topic: str, partitions: list[TopicPartition], setting: str
) -> Placement:
    """The stage's placement: the configured partitioner, or (``auto``) the one the topic's records show."""
    if partitioner != "auto":
        return configured(partitioner, len(partitions), setting)
    reader = RecordReader(bootstrap, topic, setting.rsplit(".", 1)[0] + ".bootstrap")
    try:
        await reader.start(partitions)
        pairs = await sample(reader)
    finally:
        await reader.close()
    return infer(pairs, len(partitions), setting)


def infer(records: Iterable[tuple[bytes | None, int]], partitions: int, setting: str) -> Placement:
    """The placement (key, partition) pairs of a topic's records show (see the module docstring)."""
    keyed: dict[bytes, Counter[int]] = {}
    keyless = 0
    for key, partition in records:
        if key:
            keyed.setdefault(key, Counter())[partition] += 1
        else:
            keyless += 1
    total = sum(sum(c.values()) for c in keyed.values())
    if partitions == 1:
        return Placement(1, ALL[:1], "one partition: every record lands on it")
    if not total:
        if keyless >= MIN_RECORDS:
            why = f"none of the topic's {keyless} newest records carries a key: the producer places records itself"
            return Placement(partitions, (), why, f"{why}, so canaries cannot be steered; {JUDGED}")
        seen = f"{keyless} records without a key" if keyless else "no record"
        why = f"too few keyed records to tell the partitioner (the topic holds {seen})"
        return Placement(partitions, ALL, why, f"{why}: canaries cover every partition under {EVERY}; {JUDGED}")
    agree = {name: sum(c[h(key, partitions)] for key, c in keyed.items()) for name, h in HASHES.items()}
    ranked = sorted(agree, key=lambda name: -agree[name])
    tally = "; ".join(f"{name}: {agree[name]} of {total} keyed records agree" for name in ranked)
    tally += f" ({len(keyed)} keys over {partitions} partitions)"
    fitting = [name for name in ranked if agree[name] >= AGREE * total]
    if len(fitting) == 1:
        odds = _odds(len(keyed), partitions)
        sure = f"another partitioner would place every key the same way by chance at odds of {odds}"
        return Placement(partitions, (_place(fitting[0]),), f"{setting} auto: {fitting[0]} ({tally}; {sure})")
    if fitting:
        names = " and ".join(fitting)
        why = f"{setting} auto: {names} fit the topic's few keys alike ({tally})"
        return Placement(partitions, tuple(map(_place, fitting)), f"{why}: canaries cover every partition under each")
    repeated = [c for c in keyed.values() if c.total() > 1]
    spread = sum(1 for c in repeated if len(c) > 1)
    if repeated and 2 * spread >= len(repeated):
        why = (
            f"{setting} auto: keys do not decide the partition ({spread} of {len(repeated)} keys seen more than once "
            "sit on several partitions): the producer ignores keys (round robin, sticky or random)"
        )
        return Placement(partitions, (), why, f"{why}, so canaries cannot be steered; {JUDGED}")
    why = (
        f"{setting} auto: no known partitioner places the topic's keys ({tally}): a custom partitioner, or keys the "
        "validator does not control"
    )
    return Placement(partitions, ALL, why, f"{why}, so canaries cannot be steered; {JUDGED}")


def _odds(keys: int, partitions: int) -> str:
    """The odds that a partitioner other than the fitting one places ``keys`` keys the same way by chance."""
    exponent = keys * math.log10(partitions)
    return f"1 in {partitions**keys:,}" if exponent < 6 else f"1 in 10^{exponent:.0f}"
