"""The ``kafka_topic`` probe: reads the raw topic from the run's start offsets, with no group.

Manual assignment of every partition, seeking to the end offsets taken before injection, so it reads
only this run's records and never disturbs the pipeline's consumer group. Each canary records its
offset, partition and the broker timestamp beside the probe's own time.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline_check.clock import Clock
from pipeline_check.config import KafkaStage, PipelineConfig
from pipeline_check.events import NoteBuffer
from pipeline_check.jsonpath import compile_path
from pipeline_check.kafkautil import reach, topic_partitions
from pipeline_check.probes.base import PROBES
from pipeline_check.probes.resolution import LookTimes
from pipeline_check.trace import TraceBook

FETCH_WAIT_MS = 20  # a long poll returns at most this late when the topic is idle


@PROBES.register("kafka_topic")
class KafkaTopicProbe(NoteBuffer):
    stage: ClassVar[str] = "kafka"

    def __init__(self, config: PipelineConfig, clock: Clock, book: TraceBook) -> None:
        super().__init__()
        assert config.stages.kafka is not None
        self.settings: KafkaStage = config.stages.kafka
        self.clock = clock
        self.book = book
        self._tag = compile_path("stages.kafka.tag_field", self.settings.tag_field)
        self._consumer: AIOKafkaConsumer | None = None  # made in start: an unstarted client warns when collected
        self._looks = LookTimes()
        self.baseline: dict[int, int] = {}

    async def start(self) -> None:
        bootstrap = self.settings.bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await reach(admin.start(), bootstrap)
        try:
            partitions = await topic_partitions(admin, bootstrap, self.settings.topic)
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
            await reach(consumer.start(), bootstrap)
            consumer.assign(partitions)
            ends = await reach(consumer.end_offsets(partitions), bootstrap)
        except BaseException:
            await consumer.stop()
            raise
        for tp in partitions:
            consumer.seek(tp, ends[tp])
            self.baseline[tp.partition] = ends[tp]

    async def run(self, stop: asyncio.Event) -> None:
        book, fields, consumer = self.book, self.settings.fields, self._consumer
        assert consumer is not None, "start() first"
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 5, max_records=10_000)
            now = self.clock.now()
            self._looks.look(now)
            for tp, records in batches.items():
                for record in records:
                    try:
                        message = json.loads(record.value) if record.value is not None else None
                    except ValueError:
                        continue  # not JSON: not a canary (the pipeline's DLQ handles it)
                    seq = book.seq_of(self._tag(message))
                    if seq is None:
                        continue
                    first = book.seen(
                        "kafka", seq, now, source_ms=record.timestamp, ref=record.offset, partition=tp.partition
                    )
                    if first and fields and isinstance(message, dict):
                        book.diff("kafka", seq, message, fields)

    async def finish(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def resolution(self) -> float:
        return self._looks.median
