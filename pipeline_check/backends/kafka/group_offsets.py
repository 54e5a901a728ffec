"""A consumer group's committed offsets, read from the broker that coordinates the group, through leader
changes on a cluster.

aiokafka's admin client finds the coordinator by asking a random broker of its cached metadata, dead ones
included, then asks the coordinator with a 40 s timeout. Here the coordinator is remembered while it answers;
when it fails it is found again through :class:`~pipeline_check.backends.kafka.live_brokers.LiveBrokers`
(brokers that answer first, each with a short deadline) and asked at once. While the group truly has no
coordinator (its offsets partition electing a leader) a look still fails, as the pipeline's own commits
do then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, for_code
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.coordination import FindCoordinatorRequest

from pipeline_check.backends.kafka.live_brokers import FAILURES, LiveBrokers

GROUP_COORDINATOR = 0  # FindCoordinator's key type: a consumer group (1 is a transaction)


class GroupOffsets:
    """Committed offsets of ``group``, through the client of a started ``admin``."""

    def __init__(self, admin: AIOKafkaAdminClient, group: str, brokers: LiveBrokers | None = None) -> None:
        self.group = group
        self.brokers = brokers or LiveBrokers(admin._client)  # the admin's own connections and metadata
        self._coordinator: int | None = None

    async def fetch(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Offset per partition (-1: the group committed none there). Asks the coordinator that answered
        last, and when it fails, the one a live broker names now (until the cluster fences a dead broker
        that is still the dead one: the look fails, as the pipeline's commits do)."""
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = OffsetFetchRequest(self.group, list(by_topic.items()))
        error: Exception = KafkaConnectionError("no broker known")
        for _ in range(2):
            node = self._coordinator
            try:
                if node is None:
                    node = await self._find()
                offsets = _offsets(await self.brokers.ask(request, node))
            except FAILURES as exc:  # down or stalled (ask() shuns it), or no longer the coordinator
                error = exc
                self._coordinator = None
                continue
            self._coordinator = node
            return offsets
        raise error

    async def _find(self) -> int:
        """The group's coordinator, asked of a broker that answers."""
        response = await self.brokers.ask(FindCoordinatorRequest(self.group, GROUP_COORDINATOR))
        if response.error_code:  # no coordinator yet (its partition electing a leader): ask again later
            raise for_code(response.error_code)(f"no coordinator for group {self.group!r}")
        coordinator: int = response.coordinator_id
        return coordinator


def _offsets(response: Any) -> dict[TopicPartition, int]:
    """An OffsetFetch response as offsets; its group-level or any partition's error raised."""
    code = getattr(response, "error_code", 0)  # v2+: the group's own error (not its coordinator, loading)
    if code:
        raise for_code(code)("offset fetch failed")
    offsets: dict[TopicPartition, int] = {}
    for topic, partitions in response.topics:
        for partition, offset, _metadata, error_code in partitions:
            if error_code:
                raise for_code(error_code)(f"offset fetch failed for {topic}/{partition}")
            offsets[TopicPartition(topic, partition)] = offset
    return offsets
