"""Reading a topic's records at chosen offsets, with no consumer group: the newest record of each
partition, the oldest one a group has not committed, the last few for a contract."""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline_check.backends.kafka.compression import decoding
from pipeline_check.backends.kafka.connect import reach, topic_partitions

READ_TIMEOUT = 2.0  # seconds to wait for records known to exist (a slow fetch, a control record)


class RecordReader:
    """A group-less consumer assigned to every partition of ``topic``, paused except while it reads."""

    def __init__(self, bootstrap: str, topic: str, setting: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.setting = setting  # named in connection errors, e.g. stages.kafka.bootstrap
        self.partitions: list[TopicPartition] = []
        self._consumer: AIOKafkaConsumer | None = None  # made in start: an unstarted client warns when collected

    async def start(self, partitions: list[TopicPartition] | None = None) -> None:
        """Connect and assign every partition (``partitions``, when the caller knows them already)."""
        if partitions is not None:
            self.partitions = partitions
        else:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                await reach(admin.start(), self.bootstrap, self.setting)
                self.partitions = await topic_partitions(admin, self.bootstrap, self.topic, self.setting)
            finally:
                await admin.close()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        try:
            await reach(consumer.start(), self.bootstrap, self.setting)
            consumer.assign(self.partitions)
            consumer.pause(*self.partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("RecordReader used before start")
        return self._consumer

    async def ends(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.partitions)
        return ends

    async def begins(self) -> dict[TopicPartition, int]:
        begins: dict[TopicPartition, int] = await self.consumer.beginning_offsets(self.partitions)
        return begins

    async def read(
        self, ranges: Mapping[TopicPartition, tuple[int, int]], timeout: float = READ_TIMEOUT
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The records of each partition in ``[start, stop)``, as far as they arrive within ``timeout``
        (offsets may be gaps: compaction, transaction markers)."""
        consumer = self.consumer
        wanted = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
        found: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in wanted}
        if not wanted:
            return found
        for tp, (start, _) in wanted.items():
            consumer.seek(tp, start)
        consumer.resume(*wanted)
        deadline = time.monotonic() + timeout
        try:
            while wanted and time.monotonic() < deadline:
                with decoding(self.setting.rsplit(".", 1)[0] + ".topic", self.topic):
                    batches = await consumer.getmany(*wanted, timeout_ms=100)
                for tp, records in batches.items():
                    stop = wanted.get(tp, (0, 0))[1]
                    found[tp] += [r for r in records if r.offset < stop]
                for tp in list(wanted):
                    if await consumer.position(tp) >= wanted[tp][1]:
                        consumer.pause(tp)
                        del wanted[tp]
        finally:
            consumer.pause(*self.partitions)
        return found

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
