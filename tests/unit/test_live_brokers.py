"""Asking a cluster while brokers die or stall, on a simulated aiokafka client: the group's offsets come
from its coordinator, found again on a live broker at once when the coordinator dies, without waiting on a
stalled one; a broker that failed is asked last for a while; the metadata is refreshed."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CoordinatorNotAvailableError, KafkaConnectionError, NotCoordinatorError
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.coordination import FindCoordinatorRequest

from pipeline_check.backends.kafka import live_brokers
from pipeline_check.backends.kafka.group_offsets import GroupOffsets
from pipeline_check.backends.kafka.live_brokers import LiveBrokers

TOPIC = "market.trades.raw"
PARTITIONS = [TopicPartition(TOPIC, p) for p in range(3)]


class FakeClient:
    """Brokers 1-3 (cached metadata keeps them all); ``dead`` refuse at once, ``stalled`` never answer;
    ``coordinator`` is what a live broker names; it answers committed offsets ``10 + partition``."""

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.stalled: set[int] = set()
        self.coordinator = 1
        self.not_coordinator: set[int] = set()  # alive, but the group moved away from them
        self.asked: list[tuple[int, str]] = []
        self.refreshes = 0
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(nodeId=n) for n in (1, 2, 3)])

    async def send(self, node: int, request: Any) -> Any:
        kind = "find" if isinstance(request, FindCoordinatorRequest) else "fetch"
        self.asked.append((node, kind))
        if node in self.dead:
            raise KafkaConnectionError(f"Unable connect to node with id {node}")
        if node in self.stalled:
            await asyncio.sleep(3600)
        if kind == "find":
            code = 15 if self.coordinator < 0 else 0  # COORDINATOR_NOT_AVAILABLE while it is elected
            return SimpleNamespace(error_code=code, coordinator_id=self.coordinator)
        assert isinstance(request, OffsetFetchRequest)
        if node != self.coordinator or node in self.not_coordinator:
            return SimpleNamespace(error_code=16, topics=[])  # NOT_COORDINATOR
        return SimpleNamespace(error_code=0, topics=[(TOPIC, [(p, 10 + p, "", 0) for p in range(3)])])

    def force_metadata_update(self) -> None:
        self.refreshes += 1


def offsets_of(client: FakeClient) -> GroupOffsets:
    return GroupOffsets(SimpleNamespace(_client=client), "iceberg-writer")  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_brokers, "ATTEMPT_TIMEOUT", 0.1)


def test_offsets_come_from_the_coordinator_it_remembers() -> None:
    client = FakeClient()
    source = offsets_of(client)

    async def twice() -> list[dict[TopicPartition, int]]:
        return [await source.fetch(PARTITIONS), await source.fetch(PARTITIONS)]

    first, second = asyncio.run(twice())
    assert first == second == {tp: 10 + tp.partition for tp in PARTITIONS}
    assert client.asked == [(1, "find"), (1, "fetch"), (1, "fetch")]  # found once, then asked directly


def test_a_dead_coordinator_is_found_again_on_a_live_broker_within_the_same_look() -> None:
    client = FakeClient()
    source = offsets_of(client)
    asyncio.run(source.fetch(PARTITIONS))
    client.dead.add(1)
    client.coordinator = 2  # the cluster fenced node 1 and moved the group
    client.asked.clear()
    assert asyncio.run(source.fetch(PARTITIONS)) == {tp: 10 + tp.partition for tp in PARTITIONS}
    assert client.asked == [(1, "fetch"), (2, "find"), (2, "fetch")]  # node 1 asked last for the coordinator
    assert client.refreshes >= 1 and source.brokers.failovers == 1


def test_a_stalled_broker_costs_one_short_deadline_not_aiokafkas_forty_seconds() -> None:
    client = FakeClient()
    source = offsets_of(client)
    asyncio.run(source.fetch(PARTITIONS))
    client.stalled.add(1)
    client.coordinator = 3
    began = time.monotonic()
    assert asyncio.run(source.fetch(PARTITIONS))
    assert time.monotonic() - began < 1.0
    assert client.asked[-2:] == [(2, "find"), (3, "fetch")]


def test_while_the_group_has_no_coordinator_the_look_fails_and_the_next_one_recovers() -> None:
    client = FakeClient()
    source = offsets_of(client)
    asyncio.run(source.fetch(PARTITIONS))
    client.dead.add(1)
    client.coordinator = -1  # its offsets partition is electing a leader
    with pytest.raises(CoordinatorNotAvailableError):
        asyncio.run(source.fetch(PARTITIONS))
    client.coordinator = 3
    assert asyncio.run(source.fetch(PARTITIONS))


def test_a_coordinator_that_moved_is_asked_again_but_not_shunned() -> None:
    client = FakeClient()
    source = offsets_of(client)
    asyncio.run(source.fetch(PARTITIONS))
    client.not_coordinator.add(1)
    client.coordinator = 2
    assert asyncio.run(source.fetch(PARTITIONS))
    assert source.brokers.failovers == 0  # node 1 answered: it is alive, only no longer the coordinator
    with pytest.raises(NotCoordinatorError):
        client.coordinator = 1  # named as the coordinator but refusing: every attempt fails
        asyncio.run(offsets_of(client).fetch(PARTITIONS))


def test_brokers_that_failed_are_asked_last_until_they_have_been_quiet_a_while() -> None:
    now = [100.0]
    brokers = LiveBrokers(FakeClient(), clock=lambda: now[0])  # type: ignore[arg-type]
    brokers.failed(1)
    now[0] += 1
    brokers.failed(2)
    assert brokers.candidates() == [3, 1, 2]  # the latest failure last
    now[0] += live_brokers.SHUNNED_FOR + 1
    assert brokers.candidates() == [1, 2, 3]


def test_every_broker_down_raises_the_last_failure() -> None:
    client = FakeClient()
    client.dead |= {1, 2, 3}
    with pytest.raises(KafkaConnectionError):
        asyncio.run(LiveBrokers(client).ask(FindCoordinatorRequest("g", 0)))  # type: ignore[arg-type]
    assert [node for node, _ in client.asked] == [1, 2, 3]


def test_brokers_a_fault_holds_down_are_asked_after_every_other() -> None:
    client = FakeClient()
    client.stalled |= {1, 2}  # paused by a fault: they would each cost a deadline
    began = time.monotonic()
    asyncio.run(LiveBrokers(client).ask(FindCoordinatorRequest("g", 0), last={1, 2}))  # type: ignore[arg-type]
    assert client.asked == [(3, "find")] and time.monotonic() - began < 0.1
