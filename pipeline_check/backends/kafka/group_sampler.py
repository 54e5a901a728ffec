"""The ``consumer_group`` sampler: how far the pipeline's group is behind, in records and in seconds.

Lag in records is the end offset minus the group's committed offset, summed over partitions (a
partition the group never committed counts from its first record). Lag in seconds is the age of the
oldest record not yet committed: the timestamp of the record at the committed offset, the oldest over
partitions (0 when the group is caught up).
"""

from __future__ import annotations

from typing import ClassVar

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline_check.backends.kafka.connect import reach
from pipeline_check.backends.kafka.group_offsets import GroupOffsets
from pipeline_check.backends.kafka.group_probe import ConsumerGroupSettings
from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.backends.sampler import Reading, SamplerContext, age
from pipeline_check.core.errors import EndpointError
from pipeline_check.core.plugins import PluginSettings


class ConsumerGroupSampler:
    Settings: ClassVar[type[PluginSettings]] = ConsumerGroupSettings
    provides: ClassVar[tuple[str, ...]] = ("lag", "lag_records")

    def __init__(self, settings: ConsumerGroupSettings, ctx: SamplerContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._reader = RecordReader(settings.bootstrap, settings.topic, f"stages.{ctx.stage}.bootstrap")
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: GroupOffsets | None = None
        self._times: dict[tuple[int, int], float] = {}  # (partition, offset) -> record time, epoch ms

    async def start(self) -> None:
        await self._reader.start()
        self._admin = admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap)
        await reach(admin.start(), self.settings.bootstrap, f"stages.{self.ctx.stage}.bootstrap")
        self._offsets = GroupOffsets(admin, self.settings.group)
        await self._committed()

    async def sample(self) -> Reading:
        committed = await self._committed()
        ends, begins = await self._reader.ends(), await self._reader.begins()
        behind: dict[TopicPartition, int] = {}  # partition -> the oldest offset not committed
        for tp, end in ends.items():
            start = max(committed.get(tp, -1), begins[tp])
            if start < end:
                behind[tp] = start
        records = sum(end - behind.get(tp, end) for tp, end in ends.items())
        unknown = {tp: (o, o + 1) for tp, o in behind.items() if (tp.partition, o) not in self._times}
        for tp, found in (await self._reader.read(unknown)).items():
            for record in found[:1]:  # the record at the offset, or the next one after a gap
                self._times[(tp.partition, unknown[tp][0])] = float(record.timestamp)
        oldest = [self._times[(tp.partition, o)] for tp, o in behind.items() if (tp.partition, o) in self._times]
        now_ms = self.ctx.clock.wall(self.ctx.clock.now()) * 1000
        seconds, ahead = age(now_ms, min(oldest)) if oldest else (0.0, 0.0)
        keep = {(tp.partition, o) for tp, o in behind.items()}
        self._times = {key: t for key, t in self._times.items() if key in keep}
        position = tuple(sorted((tp.partition, o) for tp, o in committed.items()))
        spread = f" over {len(behind)} partition{'s' if len(behind) > 1 else ''}" if behind else ""
        detail = f"{records:,} records behind{spread}"
        return Reading(
            {"lag": seconds, "lag_records": float(records)}, position, backlog=records > 0, ahead_s=ahead, detail=detail
        )

    async def close(self) -> None:
        try:
            await self._reader.close()
        finally:
            if self._admin is not None:
                await self._admin.close()

    async def _committed(self) -> dict[TopicPartition, int]:
        """The group's committed offset per partition (partitions it never committed are left out)."""
        if self._offsets is None:
            raise RuntimeError("ConsumerGroupSampler used before start")
        group = self.settings.group
        try:
            offsets = await self._offsets.fetch(self._reader.partitions)
        except (KafkaError, OSError) as exc:
            raise EndpointError(
                f"stages.{self.ctx.stage}.group", group, f"offsets unavailable ({type(exc).__name__}: {exc})",
                "is the broker up and the group name the pipeline's?",
            ) from None  # fmt: skip
        return {tp: offset for tp, offset in offsets.items() if offset >= 0}
