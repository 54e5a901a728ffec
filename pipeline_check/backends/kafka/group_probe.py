"""The ``consumer_group`` probe: when did the pipeline's group commit past each canary's offset?

Polls the group's committed offsets (admin API, read-only: it never joins the group); a canary counts
as consumed at the first poll whose committed offset on its partition lies beyond the offset recorded
for it upstream (by the ``kafka_topic`` probe). It polls every ``poll_interval`` while the topic holds
canaries the group has not committed past (and during the settle window), every ``idle_interval``
otherwise, never more often than ``max_request_rate`` (``backends.polling``); each poll is one admin request.
On a cluster the offsets come from the group's coordinator, found again on another broker at once when one
dies or stalls (``group_offsets.GroupOffsets``).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import Field

from pipeline_check.backends.kafka.connect import reach, topic_partitions
from pipeline_check.backends.kafka.group_offsets import GroupOffsets
from pipeline_check.backends.polling import PollPolicy, PollSettings
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.core.plugins import PluginSettings


class ConsumerGroupSettings(PollSettings):
    inherit: ClassVar = {"stages.kafka": ("bootstrap", "topic")}

    group: str = Field(min_length=1)
    bootstrap: str = Field(min_length=1)
    topic: str = Field(min_length=1)


class ConsumerGroupProbe:
    Settings: ClassVar[type[PluginSettings]] = ConsumerGroupSettings
    needs_upstream_refs: ClassVar[bool] = True

    def __init__(self, settings: ConsumerGroupSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._admin: AIOKafkaAdminClient | None = None  # made in start: an unstarted one warns when collected
        self._offsets: GroupOffsets | None = None
        self._partitions: list[int] = []
        self._poll = PollPolicy.of(settings, ctx)

    async def start(self) -> None:
        bootstrap = self.settings.bootstrap
        setting = f"stages.{self.ctx.stage}.bootstrap"
        self._admin = admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await reach(admin.start(), bootstrap, setting)
        tps = await topic_partitions(admin, bootstrap, self.settings.topic, setting)
        self._partitions = [tp.partition for tp in tps]
        self._offsets = offsets = GroupOffsets(admin, self.settings.group)
        await reach(self._committed(offsets), bootstrap, f"stages.{self.ctx.stage}.group")

    async def run(self, stop: asyncio.Event) -> None:
        offsets = self._offsets
        if offsets is None:
            raise RuntimeError("ConsumerGroupProbe.run before start")
        while not stop.is_set():
            await self._look(offsets)
            await self._poll.wait(stop)

    async def finish(self) -> None:
        if self._admin is None:
            return
        try:
            if self._offsets is not None:
                await self._look(self._offsets)
        finally:
            await self._admin.close()

    @property
    def resolution(self) -> float:
        return self._poll.resolution

    async def _look(self, source: GroupOffsets) -> None:
        ctx = self.ctx
        try:
            committed = await self._committed(source)
        except (KafkaError, OSError) as exc:  # a broker restart: keep looking until the run ends
            ctx.note(f"consumer group {self.settings.group!r} offsets unavailable ({type(exc).__name__}); retrying")
            return
        now = ctx.clock.now()
        self._poll.looked(now)
        tags, partitions, offsets = ctx.recorder.pending_refs(ctx.stage, ctx.upstream)
        located = (partitions >= 0) & (partitions < len(committed))
        done = np.zeros(len(tags), bool)
        done[located] = offsets[located] < committed[partitions[located]]
        for tag in tags[done]:
            ctx.recorder.seen(ctx.stage, int(tag), now)

    async def _committed(self, source: GroupOffsets) -> npt.NDArray[np.int64]:
        """Committed offset per partition index (-1 where the group committed nothing yet)."""
        topic = self.settings.topic
        await self._poll.request()
        self.ctx.load.add("admin")
        fetched = await source.fetch(TopicPartition(topic, p) for p in self._partitions)
        committed = np.full(max(self._partitions, default=0) + 1, -1, np.int64)
        for tp, offset in fetched.items():
            if tp.topic == topic and offset >= 0:
                committed[tp.partition] = offset
        return committed
