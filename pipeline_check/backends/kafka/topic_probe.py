"""The ``kafka_topic`` probe: reads the raw topic from the run's start offsets, with no group.

Manual assignment of every partition, seeking to the end offsets taken before injection, so it reads
only this run's records and never disturbs the pipeline's consumer group. Each canary records its
partition and offset (the stage's reference: coverage per partition and ordering are judged on them)
and the broker timestamp beside the probe's own time.

Keeping up with a production topic (``fetches``): JSON record batches that do not hold the run's tag digits
are emptied before they are parsed, and a record is decoded only when its value holds them, so the probe
reads a busy topic at C speed. How much it reads: while a canary it has not seen is on its way (and during
the settle window) every partition is long-polled, so a canary is read the moment it is written; once none
is, the partitions are paused, and every ``idle_interval`` (``backends.polling``) the probe catches up to
the log end. It never skips a record, so a re-send or a duplicate written while it idles is still counted
(a copy's time is not a latency); it only stops asking while nothing it waits for can be there. Its last
look reads every partition to the log end.

A probe that falls behind the topic (a backlog, a starved CPU) dates a canary by the first fetch answer
whose log end had passed its offset (the probe knew it was there), not by when it got to read it: its own
lag never reads as the pipeline's latency. The run notes it, and the stage's resolution widens to the
widest such dating.

Records are JSON, or with ``format = "avro"`` Confluent-framed Avro decoded with the writer schema their id
names (``codecs.settings``) into the values the fidelity diff compares (``codecs.to_comparable``: decimals
exact, timestamps as epoch ms). A record that does not decode is not a canary; how many there were is noted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, ClassVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import AfterValidator, Field

from pipeline_check.backends.kafka.codecs.avro import (
    AvroCodec,
    DecodeError,
    UnknownSchemaError,
    WireFormatError,
    to_comparable,
)
from pipeline_check.backends.kafka.codecs.record_format import FormatSettings, close_codec, reader_codec
from pipeline_check.backends.kafka.compression import decoding
from pipeline_check.backends.kafka.connect import reach, topic_partitions
from pipeline_check.backends.kafka.fetches import FetchTap, needle_of
from pipeline_check.backends.kafka.partitioners import Partitioner, topic_placement
from pipeline_check.backends.kafka.template import flat
from pipeline_check.backends.polling import PollPolicy, PollSettings
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.coverage import Placement
from pipeline_check.canary.fidelity import Fields
from pipeline_check.canary.tag_readers import TagSettings, tag_reader
from pipeline_check.core.jsonpath import check_path
from pipeline_check.core.plugins import PluginSettings

FETCH_WAIT_MS = 500  # a long poll: the broker answers the moment records arrive, else after this
READ_MS = 100  # how long one read waits for records before the probe looks at its pace again
CATCH_UP_S = 5.0  # a catch-up to the log end (idle, or the last look) stops after this long
BEHIND_S = 0.1  # a canary read this long after the probe knew it was in the log: the probe fell behind


class KafkaTopicSettings(FormatSettings, TagSettings, PollSettings):
    bootstrap: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    tag_field: Annotated[str, AfterValidator(check_path)] = "t"  # JMESPath into the decoded record
    fields: Fields = Field(default_factory=dict)
    partitioner: Partitioner = "auto"  # how the producer places keyed records (partitioners.py)


class KafkaTopicProbe:
    Settings: ClassVar[type[PluginSettings]] = KafkaTopicSettings

    def __init__(self, settings: KafkaTopicSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._tag = tag_reader(settings, f"stages.{ctx.stage}")
        self._consumer: AIOKafkaConsumer | None = None  # made in start: an unstarted client warns when collected
        self._codec: AvroCodec | None = None  # format = "avro"
        self._undecodable = 0
        self._poll = PollPolicy.of(settings, ctx)
        # JSON holds a tag as its digits: batches and values without the run's leading digits hold no canary
        self._needle = needle_of(ctx.run.lo, ctx.run.hi) if settings.format == "json" else b""
        self._tap = FetchTap(ctx.load, self._poll.request, ctx.clock.now, self._needle, self._fetched)
        self._partitions: list[TopicPartition] = []
        self._paused = False
        self._answered: float | None = None  # when the last fetch answer came
        self._late: list[float] = []  # seconds between knowing a canary was in the log and reading it
        self._dated: list[float] = []  # how wide the dating of each late canary was

    async def start(self) -> None:
        bootstrap = self.settings.bootstrap
        setting = f"stages.{self.ctx.stage}.bootstrap"
        where = f"stages.{self.ctx.stage}"
        self._codec = await asyncio.to_thread(reader_codec, self.settings, self.settings.topic, where)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await reach(admin.start(), bootstrap, setting)
            partitions = await topic_partitions(admin, bootstrap, self.settings.topic, setting)
        finally:
            await admin.close()
        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._tap.install(consumer)
        try:
            await reach(consumer.start(), bootstrap, setting)
            consumer.assign(partitions)
            ends = await reach(consumer.end_offsets(partitions), bootstrap, setting)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        self._partitions = list(partitions)
        now = self.ctx.clock.now()
        for tp in partitions:
            consumer.seek(tp, ends[tp])
            self._tap.ends.observe(tp.partition, now, ends[tp])
        self.ctx.recorder.declare_shards(self.ctx.stage, [tp.partition for tp in partitions])
        self.ctx.recorder.declare_ordered(self.ctx.stage)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("KafkaTopicProbe.run before start")
        poll = self._poll
        while not stop.is_set():
            if poll.fast:  # a canary on its way: long-poll every partition
                self._pause(consumer, False)
                await self._read(consumer)
                continue
            if not self._paused:  # nothing awaited any more: the long poll left the probe at the log end
                self._pause(consumer, True)
                poll.looked()
            await poll.wait(stop)
            if not poll.fast and not stop.is_set():  # idle_interval passed: catch up (copies, re-sends)
                await self._catch_up(consumer)
                self._pause(consumer, True)
                poll.looked()

    async def finish(self) -> None:
        """A last read up to the log end the last fetch answers reported (late copies; asking the broker
        again would queue behind a long poll on the same connection), then the client closes."""
        try:
            if self._consumer is not None:
                try:
                    ends = {tp: self._tap.ends.last(tp.partition) for tp in self._partitions}
                    await self._catch_up(self._consumer, {tp: end for tp, end in ends.items() if end is not None})
                finally:
                    await self._consumer.stop()
        finally:
            close_codec(self._codec)
        if self._undecodable:
            self.ctx.note(
                f"{self._undecodable} records of {self.settings.topic} did not decode as {self.settings.format} "
                "and were skipped (not canaries)"
            )
        if self._late:
            self.ctx.note(
                f"the {self.ctx.stage} probe fell behind {self.settings.topic}: {len(self._late)} canaries read up to "
                f"{max(self._late):.2f}s after it knew they were in the log; they are dated by when it knew, and the "
                f"stage's resolution is widened to {self.resolution:.3f}s"
            )

    @property
    def resolution(self) -> float:
        return max(self._poll.resolution, max(self._dated, default=0.0))

    def _fetched(self, sent: float, answered: float) -> None:
        """A fetch went out at ``sent`` and came back at ``answered``: from the last answer until ``sent``
        no long poll waited at the broker, the probe could not see new records (its resolution)."""
        if self._answered is not None:
            self._poll.blind(self._answered, sent)
        self._answered = answered

    def _pause(self, consumer: AIOKafkaConsumer, paused: bool) -> None:
        if paused != self._paused:
            (consumer.pause if paused else consumer.resume)(*self._partitions)
            self._paused = paused

    async def _catch_up(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int] | None = None) -> None:
        """Read every partition up to ``ends`` (default: the log end as it is now), for at most ``CATCH_UP_S``."""
        clock = self.ctx.clock
        if ends is None:
            ends = await consumer.end_offsets(self._partitions)
            now = clock.now()
            for tp, end in ends.items():
                self._tap.ends.observe(tp.partition, now, end)
        deadline = clock.now() + CATCH_UP_S
        while clock.now() < deadline:
            behind = [tp for tp in ends if await consumer.position(tp) < ends[tp]]
            if not behind:
                return
            self._pause(consumer, False)
            await self._read(consumer)

    async def placement(self) -> Placement:
        """Where records keyed by a canary's symbol land: the configured partitioner, or the one the topic's
        records show (``auto``); asked once, by a run that chooses canary symbols for this topic."""
        settings, where = self.settings, f"stages.{self.ctx.stage}"
        found = await topic_placement(
            settings.partitioner, settings.bootstrap, settings.topic, self._partitions, f"{where}.partitioner"
        )
        self.ctx.note(found.finding)
        return found

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        with decoding(f"stages.{self.ctx.stage}.topic", self.settings.topic):
            batches = await consumer.getmany(timeout_ms=READ_MS, max_records=10_000)
        now = self.ctx.clock.now()
        needle = self._needle
        for tp, records in batches.items():
            for record in records:
                if not needle or (record.value is not None and needle in record.value):
                    self._canary(tp.partition, record, now)

    def _canary(self, partition: int, record: ConsumerRecord, now: float) -> None:
        """Tell the recorder about ``record`` if it is a canary, dated by when the probe knew it was in the
        log (``now`` unless the probe fell behind)."""
        message = self._decode(record.value)
        tag = self._tag(message)
        if tag is None:
            return
        at, before = now, now
        known = self._tap.ends.known(partition, record.offset)
        if known is not None and known[0] < now:
            at, before = known
        recorder, stage, fields = self.ctx.recorder, self.ctx.stage, self.settings.fields
        first = recorder.seen(stage, tag, at, source_ms=record.timestamp, ref=Ref(partition, record.offset))
        if first and now - at > BEHIND_S:  # a first sighting the probe itself was late to read
            self._late.append(now - at)
            self._dated.append(at - before)
        if fields and isinstance(message, dict):  # every copy: a re-send with another payload differs
            recorder.diff(stage, tag, flat(message), fields, at=at)

    def _decode(self, value: bytes | None) -> Any:
        """The record as a document, or None when it is not one of the stage's format."""
        if self._codec is None:
            return _json(value)
        if value is None:
            return None
        try:
            return to_comparable(self._codec.decode(value))
        except (WireFormatError, UnknownSchemaError, DecodeError) as exc:
            if not self._undecodable:
                self.ctx.note(f"a record of {self.settings.topic} is not readable Avro ({exc}); skipping such records")
            self._undecodable += 1
            return None


def _json(value: bytes | None) -> Any:
    """The record's JSON, or None: a record that is not JSON is not a canary (the pipeline's DLQ's)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None
