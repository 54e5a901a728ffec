"""The ``consumer_group`` probe: when did the pipeline's group commit past each canary's offset?

Polls the group's committed offsets (admin API, read-only: it never joins the group) and the topic's
end offsets; a canary counts as consumed at the first poll whose committed offset lies beyond the
offset the ``kafka_topic`` probe recorded for it. The lag (end - committed) is sampled at every poll.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline_check.clock import Clock
from pipeline_check.config import ConsumerStage, KafkaStage, PipelineConfig
from pipeline_check.events import NoteBuffer
from pipeline_check.kafkautil import reach, topic_partitions
from pipeline_check.probes.base import PROBES
from pipeline_check.probes.resolution import LookTimes
from pipeline_check.trace import TraceBook


@PROBES.register("consumer_group")
class ConsumerGroupProbe(NoteBuffer):
    stage: ClassVar[str] = "consumer"

    def __init__(self, config: PipelineConfig, clock: Clock, book: TraceBook) -> None:
        super().__init__()
        assert config.stages.consumer is not None and config.stages.kafka is not None
        self.settings: ConsumerStage = config.stages.consumer
        self.kafka: KafkaStage = config.stages.kafka
        self.clock = clock
        self.book = book
        # clients are made in start: an unstarted one warns when it is collected
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._looks = LookTimes()
        self.lag: list[tuple[float, int]] = []  # (monotonic time, total lag) per poll

    async def start(self) -> None:
        bootstrap = self.kafka.bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        try:
            await reach(self._admin.start(), bootstrap)
            await reach(self._ends.start(), bootstrap)
            self._partitions = await topic_partitions(self._admin, bootstrap, self.kafka.topic)
            await reach(self._committed(), bootstrap, "stages.consumer.group")
        except BaseException:
            await self.finish()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        book, ends_client = self.book, self._ends
        assert ends_client is not None, "start() first"
        while not stop.is_set():
            try:
                committed = await self._committed()
                ends = await ends_client.end_offsets(self._partitions)
            except (KafkaError, OSError) as exc:  # a broker restart: keep looking until the run ends
                self.note(f"consumer group offsets unavailable ({type(exc).__name__}); retrying")
                await asyncio.sleep(self.settings.poll_interval)
                continue
            now = self.clock.now()
            self._looks.look(now)
            self.lag.append((now, sum(ends[tp] - max(committed[tp.partition], 0) for tp in self._partitions)))
            pending = book.pending("consumer")
            if len(pending):
                partitions = book.kafka_partition[pending]
                offsets = book.refs("kafka")[pending]
                located = partitions >= 0
                done = np.zeros(len(pending), bool)
                done[located] = offsets[located] < committed[partitions[located]]
                for seq in pending[done]:
                    book.seen("consumer", int(seq), now)
            await asyncio.sleep(self.settings.poll_interval)

    async def finish(self) -> None:
        if self._ends is not None:
            await self._ends.stop()
        if self._admin is not None:
            await self._admin.close()

    @property
    def resolution(self) -> float:
        return self._looks.median

    async def _committed(self) -> np.ndarray:
        """Committed offset per partition index (-1 where the group committed nothing yet)."""
        assert self._admin is not None, "start() first"
        offsets = await self._admin.list_consumer_group_offsets(self.settings.group, partitions=self._partitions)
        committed = np.full(max((tp.partition for tp in self._partitions), default=0) + 1, -1, np.int64)
        for tp, meta in offsets.items():
            if tp.topic == self.kafka.topic and meta is not None and meta.offset >= 0:
                committed[tp.partition] = meta.offset
        return committed
