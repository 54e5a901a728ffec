"""The ``consumer_group`` probe: when did the pipeline's group commit past each canary's offset?

Polls the group's committed offsets (admin API, read-only: it never joins the group); a canary counts
as consumed at the first poll whose committed offset on its partition lies beyond the offset recorded
for it upstream (by the ``kafka_topic`` probe). It polls every ``poll_interval`` while the topic holds
canaries the group has not committed past (and during the settle window), every ``idle_interval``
otherwise, never more often than ``max_request_rate`` (``backends.polling``); each poll is one admin request.
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
        self._partitions: list[int] = []
        self._poll = PollPolicy.of(settings, ctx)

    async def start(self) -> None:
        bootstrap = self.settings.bootstrap
        setting = f"stages.{self.ctx.stage}.bootstrap"
        self._admin = admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await reach(admin.start(), bootstrap, setting)
        tps = await topic_partitions(admin, bootstrap, self.settings.topic, setting)
        self._partitions = [tp.partition for tp in tps]
        await reach(self._committed(admin), bootstrap, f"stages.{self.ctx.stage}.group")

    async def run(self, stop: asyncio.Event) -> None:
        admin = self._admin
        if admin is None:
            raise RuntimeError("ConsumerGroupProbe.run before start")
        while not stop.is_set():
            await self._look(admin)
            await self._poll.wait(stop)

    async def finish(self) -> None:
        if self._admin is None:
            return
        try:
            await self._look(self._admin)
        finally:
            await self._admin.close()

    @property
    def resolution(self) -> float:
        return self._poll.resolution

    async def _look(self, admin: AIOKafkaAdminClient) -> None:
        ctx = self.ctx
        try:
            committed = await self._committed(admin)
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

    async def _committed(self, admin: AIOKafkaAdminClient) -> npt.NDArray[np.int64]:
        """Committed offset per partition index (-1 where the group committed nothing yet)."""
        topic = self.settings.topic
        tps = [TopicPartition(topic, p) for p in self._partitions]
        await self._poll.request()
        self.ctx.load.add("admin")
        offsets = await admin.list_consumer_group_offsets(self.settings.group, partitions=tps)
        committed = np.full(max(self._partitions, default=0) + 1, -1, np.int64)
        for tp, meta in offsets.items():
            if tp.topic == topic and meta is not None and meta.offset >= 0:
                committed[tp.partition] = meta.offset
        return committed
