"""The ``kafka_topic`` probe: reads the raw topic from the run's start offsets, with no group.

Manual assignment of every partition, seeking to the end offsets taken before injection, so it reads
only this run's records and never disturbs the pipeline's consumer group. Each canary records its
partition and offset (the stage's reference: coverage per partition and ordering are judged on them)
and the broker timestamp beside the probe's own time.

Records are JSON, or with ``format = "avro"`` Confluent-framed Avro decoded with the writer schema their id
names (``codecs.settings``) into the values the fidelity diff compares (``codecs.to_comparable``: decimals
exact, timestamps as epoch ms). A record that does not decode is not a canary; how many there were is noted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
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
from pipeline_check.backends.kafka.partitioners import Partitioner, topic_placement
from pipeline_check.backends.kafka.template import flat
from pipeline_check.backends.look_times import LookTimes
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.coverage import Placement
from pipeline_check.canary.fidelity import Fields
from pipeline_check.canary.tag_readers import TagSettings, tag_reader
from pipeline_check.core.jsonpath import check_path
from pipeline_check.core.plugins import PluginSettings

FETCH_WAIT_MS = 20  # a long poll returns at most this late when the topic is idle


class KafkaTopicSettings(FormatSettings, TagSettings):
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
        self._looks = LookTimes()
        self._codec: AvroCodec | None = None  # format = "avro"
        self._undecodable = 0
        self._partitions: list[TopicPartition] = []

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
        try:
            await reach(consumer.start(), bootstrap, setting)
            consumer.assign(partitions)
            ends = await reach(consumer.end_offsets(partitions), bootstrap, setting)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        for tp in partitions:
            consumer.seek(tp, ends[tp])
        self._partitions = partitions
        self.ctx.recorder.declare_shards(self.ctx.stage, [tp.partition for tp in partitions])
        self.ctx.recorder.declare_ordered(self.ctx.stage)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("KafkaTopicProbe.run before start")
        while not stop.is_set():
            await self._read(consumer)

    async def finish(self) -> None:
        """A last read of what arrived since the stop (late copies), then the client closes."""
        try:
            if self._consumer is not None:
                try:
                    await self._read(self._consumer)
                finally:
                    await self._consumer.stop()
        finally:
            close_codec(self._codec)
        if self._undecodable:
            self.ctx.note(
                f"{self._undecodable} records of {self.settings.topic} did not decode as {self.settings.format} "
                "and were skipped (not canaries)"
            )

    @property
    def resolution(self) -> float:
        return self._looks.median

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
        recorder, stage, fields = self.ctx.recorder, self.ctx.stage, self.settings.fields
        with decoding(f"stages.{stage}.topic", self.settings.topic):
            batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 5, max_records=10_000)
        now = self.ctx.clock.now()
        self._looks.look(now)
        for tp, records in batches.items():
            for record in records:
                message = self._decode(record.value)
                tag = self._tag(message)
                if tag is None:
                    continue
                recorder.seen(stage, tag, now, source_ms=record.timestamp, ref=Ref(tp.partition, record.offset))
                if fields and isinstance(message, dict):  # every copy: a re-send with another payload differs
                    recorder.diff(stage, tag, flat(message), fields, at=now)

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
