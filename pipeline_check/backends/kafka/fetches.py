"""What passes between the ``kafka_topic`` probe's consumer and the brokers, seen at the one place every
request goes through (the consumer's client, pinned aiokafka):

- every request is counted in the probe's load (fetches with the record bytes they carried; the others as
  admin requests), and waits for its turn under the stage's ``max_request_rate``;
- the log end each fetch answer reports is noted per partition with the probe's time (:class:`LogEnds`), so a
  record read late is dated by when the probe first knew it was in the log, not by when it got to it;
- with a ``needle`` (the decimal digits every tag of the run begins with, for JSON records), a record batch
  whose records (decompressed) do not hold it is replaced by an empty batch over the same offsets before
  aiokafka parses it: a production topic's background batches are skipped at C speed, and the consumer's
  position moves past them as if it had read them.

A canary's record always holds its tag's digits (a tag reader reads only an integer or a text of digits),
so the filter never hides a canary of the run; it hides other runs' canaries (counted as foreign elsewhere).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, codec
from aiokafka.record.util import calc_crc32c

from pipeline_check.verdict.probe_load import ProbeLoad

FETCH = 1  # the Fetch API key
HEADER = 61  # bytes of a v2 record batch header
MAGIC_AT = 16  # byte offset of the magic in a batch
CONTROL = 0x20  # attribute bit of a control batch
DECOMPRESS: dict[int, Callable[[Any], bytes]] = {
    1: codec.gzip_decode,
    2: codec.snappy_decode,
    3: codec.lz4_decode,
    4: codec.zstd_decode,
}
ENDS_KEPT = 4096  # log end observations kept per partition (the probe prunes those it read past)


def needle_of(lo: int, hi: int) -> bytes:
    """The decimal digits every integer in ``[lo, hi]`` begins with (a run's tags: 10 or more digits)."""
    a, b = str(lo), str(hi)
    if len(a) != len(b):
        return b""
    common = 0
    while common < len(a) and a[common] == b[common]:
        common += 1
    return a[:common].encode()


def _empty_batch(base_offset: int, last_offset_delta: int, first_ts: int, max_ts: int) -> bytes:
    """A v2 batch holding no record over ``base_offset .. base_offset + last_offset_delta``: a consumer reads
    nothing from it and moves past its offsets."""
    body = struct.pack(">hiqqqhii", 0, last_offset_delta, first_ts, max_ts, -1, -1, -1, 0)
    return struct.pack(">qiibI", base_offset, len(body) + 9, -1, 2, calc_crc32c(body)) + body


def hollow(records: bytes, needle: bytes) -> tuple[bytes, int, int]:
    """``records`` (a fetched record set) with every v2 batch whose records do not hold ``needle`` emptied;
    (the set, batches read, batches emptied). Control batches, older formats and a partial batch at the end
    (cut by the fetch size) pass as they are."""
    view = memoryview(records)
    parts: list[bytes | memoryview] = []
    size, pos, start, batches, emptied = len(records), 0, 0, 0, 0
    while pos + HEADER <= size:
        base_offset, length = struct.unpack_from(">qi", records, pos)
        end = pos + 12 + length
        if end > size:
            break
        attributes, last_delta, first_ts, max_ts = struct.unpack_from(">hiqq", records, pos + 21)
        if records[pos + MAGIC_AT] == 2 and not attributes & CONTROL:
            batches += 1
            body = view[pos + HEADER : end]
            decompress = DECOMPRESS.get(attributes & 0x07)
            data = bytes(body) if decompress is None else decompress(bytes(body))
            if needle not in data:
                parts += [view[start:pos], _empty_batch(base_offset, last_delta, first_ts, max_ts)]
                start = end
                emptied += 1
        pos = end
    if not emptied:
        return records, batches, 0
    parts.append(view[start:])
    return b"".join(parts), batches, emptied


@dataclass(slots=True)
class LogEnds:
    """Per partition, the log ends (high watermarks) fetch answers reported and when: the earliest time the
    probe knew an offset was in the log."""

    seen: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    def observe(self, partition: int, at: float, end: int) -> None:
        ends = self.seen.setdefault(partition, [])
        if not ends or end > ends[-1][1]:
            ends.append((at, end))
            if len(ends) > ENDS_KEPT:
                del ends[: len(ends) - ENDS_KEPT]

    def last(self, partition: int) -> int | None:
        """The newest log end an answer reported for ``partition``."""
        ends = self.seen.get(partition)
        return ends[-1][1] if ends else None

    def known(self, partition: int, offset: int) -> tuple[float, float] | None:
        """When the probe first knew ``offset`` was in the log, and the last time before that it knew it was
        not (None: never, or not any more); drops what came before (records are read in offset order)."""
        ends = self.seen.get(partition, [])
        for i, (at, end) in enumerate(ends):
            if end > offset:
                before = ends[i - 1][0] if i else at
                del ends[: max(0, i - 1)]
                return at, before
        return None


class FetchTap:
    """Wraps one consumer's client ``send`` (see the module docstring)."""

    def __init__(
        self,
        load: ProbeLoad,
        turn: Callable[[], Awaitable[None]],
        clock: Callable[[], float],
        needle: bytes = b"",
        on_fetch: Callable[[float, float], None] | None = None,
    ) -> None:
        self.load = load
        self.turn = turn  # waits for a request's turn under the rate cap
        self.clock = clock
        self.needle = needle
        self.on_fetch = on_fetch  # (sent, answered): when each fetch went out and came back
        self.ends = LogEnds()
        self.batches = 0
        self.emptied = 0

    def install(self, consumer: AIOKafkaConsumer) -> None:
        client = consumer._client  # pinned aiokafka: every request of the consumer goes through it
        inner = client.send

        async def send(node_id: Any, request: Any, **kwargs: Any) -> Any:
            fetch = getattr(request, "API_KEY", None) == FETCH
            await self.turn()
            sent = self.clock()
            response = await inner(node_id, request, **kwargs)
            if fetch and response is not None:
                self._fetched(response, sent)
            else:
                self.load.add("admin")
            return response

        client.send = send

    def _fetched(self, response: Any, sent: float) -> None:
        now = self.clock()
        carried = 0
        topics = []
        for topic, partitions in response.topics:
            rows = []
            for row in partitions:
                partition, error, end, records = row[0], row[1], row[2], row[-1]
                carried += len(records or b"")
                if error == 0:
                    self.ends.observe(partition, now, end)
                if self.needle and records:
                    kept, batches, emptied = hollow(records, self.needle)
                    self.batches += batches
                    self.emptied += emptied
                    row = (*row[:-1], kept) if emptied else row
                rows.append(row)
            topics.append((topic, rows))
        response.topics = topics
        self.load.add("fetches", carried)
        if self.on_fetch is not None:
            self.on_fetch(sent, now)
