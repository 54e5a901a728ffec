"""The ``kafka_topic`` sampler: the age of the topic's newest record.

Each look reads the end offsets and, for partitions that grew, the record just before the end. Its age
is by the broker timestamp (CreateTime: the producer's clock; LogAppendTime: the broker's), or by the
JSON field ``passive.event_time`` names.
"""

from __future__ import annotations

import json
from typing import ClassVar

from aiokafka import ConsumerRecord, TopicPartition

from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.backends.kafka.topic_probe import KafkaTopicSettings
from pipeline_check.backends.sampler import Reading, SamplerContext, age
from pipeline_check.core.jsonpath import compile_path
from pipeline_check.core.plugins import PluginSettings


class KafkaTopicSampler:
    Settings: ClassVar[type[PluginSettings]] = KafkaTopicSettings
    provides: ClassVar[tuple[str, ...]] = ("freshness",)

    def __init__(self, settings: KafkaTopicSettings, ctx: SamplerContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._reader = RecordReader(settings.bootstrap, settings.topic, f"stages.{ctx.stage}.bootstrap")
        field = ctx.event_time
        self._field = compile_path(f"passive.event_time.{ctx.stage}", field) if field else None
        self._ends: dict[TopicPartition, int] = {}
        self._newest: dict[TopicPartition, float] = {}  # per partition: its newest record's time, epoch ms

    async def start(self) -> None:
        await self._reader.start()

    async def sample(self) -> Reading:
        ends = await self._reader.ends()
        grown = {tp: (end - 1, end) for tp, end in ends.items() if end > 0 and end != self._ends.get(tp)}
        for tp, records in (await self._reader.read(grown)).items():
            times = [t for t in map(self._time, records) if t is not None]
            if times:
                self._newest[tp] = max(times)
        self._ends = ends
        position = sum(ends.values())
        if not self._newest:
            return Reading(position=position if position else None, detail="no record in the topic")
        newest = max(self._newest.values())
        seconds, ahead = age(self.ctx.clock.wall(self.ctx.clock.now()) * 1000, newest)
        what = f"field {self.ctx.event_time}" if self._field else "broker timestamp"
        return Reading({"freshness": seconds}, position, ahead_s=ahead, detail=f"newest record by {what}")

    async def close(self) -> None:
        await self._reader.close()

    def _time(self, record: ConsumerRecord) -> float | None:
        if self._field is None:
            return float(record.timestamp) if record.timestamp is not None and record.timestamp >= 0 else None
        try:
            value = self._field(json.loads(record.value)) if record.value is not None else None
        except ValueError:
            return None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
