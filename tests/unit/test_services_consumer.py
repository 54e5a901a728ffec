"""The reference consumer's stall check (compose/services/consumer.py) against a stand-in Kafka client."""

from __future__ import annotations

import asyncio

import pytest
import services.consumer
from aiokafka import TopicPartition
from services.common import Shutdown
from services.consumer import STALL_S, Consumer, ConsumerConfig

from tests.unit.test_services_writes import TOPIC


class StalledClient:
    """aiokafka's consumer as a stall leaves it: its position at the log end, though the records before it
    were never handed over by ``getmany``."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.answering = True

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self.answering:
            await asyncio.sleep(3600)
        return {tp: self.ends[tp.partition] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.ends[tp.partition]


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> Consumer:
    env = {
        "KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "RAW_TOPIC": TOPIC,
        "RAW_TOPIC_PARTITIONS": "3",
        "DLQ_TOPIC": "market.trades.dlq",
        "ICEBERG_CATALOG_URI": "sqlite:////nonexistent/catalog.db",
        "ICEBERG_WAREHOUSE": "file:///nonexistent/warehouse",
        "ICEBERG_TABLE": "market.trades",
        "CONSUMER_GROUP": "iceberg-writer",
        "HEALTH_PORT": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = Consumer(ConsumerConfig.from_env(), Shutdown())
    service.watchdog.ok = True  # Kafka answers the watchdog's own client
    return service


def test_records_the_client_skipped_past_are_a_stall(consumer: Consumer) -> None:
    consumer.consumer = StalledClient({0: 500, 1: 80, 2: 0})  # type: ignore[assignment]
    consumer.guard.position(TOPIC, 0, 300)  # taken in up to 300: 200 records wait
    consumer.guard.position(TOPIC, 1, 80)  # all taken in
    consumer.guard.position(TOPIC, 2, 0)  # nothing produced

    async def checks() -> list[list[str]]:
        return [await consumer._stalled(now) for now in (0.0, STALL_S - 1, STALL_S)]

    assert asyncio.run(checks()) == [[], [], [f"{TOPIC}:0"]]


def test_a_client_that_stops_answering_is_a_stall_unless_kafka_is_down(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.consumer, "KAFKA_WAIT_S", 0.05)
    client = StalledClient({0: 10})
    client.answering = False
    consumer.consumer = client  # type: ignore[assignment]
    consumer.guard.position(TOPIC, 0, 10)

    async def checks() -> list[list[str]]:
        consumer.watchdog.ok = False  # Kafka itself unreachable: says nothing about the client
        down = [await consumer._stalled(now) for now in (0.0, STALL_S)]
        consumer.watchdog.ok = True
        return down + [await consumer._stalled(now) for now in (STALL_S + 1, 2 * STALL_S + 1)]

    assert asyncio.run(checks()) == [[], [], [], [f"{TOPIC}:0"]]
