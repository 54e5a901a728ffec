"""Connecting to Kafka with a deadline, failures turned into an ``EndpointError`` naming the setting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline_check.core.errors import EndpointError
from pipeline_check.core.log_repeats import collapse_repeats

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0


async def reach(step: Awaitable[T], bootstrap: str, setting: str) -> T:
    """Await a connecting step (start a client, fetch metadata) or explain why Kafka is unreachable.
    aiokafka's repeated records (an ERROR per refused connection while a broker is down) are collapsed."""
    collapse_repeats("aiokafka")
    began = time.monotonic()
    try:
        return await asyncio.wait_for(step, CONNECT_TIMEOUT)
    except (KafkaError, TimeoutError, OSError) as exc:
        took = time.monotonic() - began
        what = (
            f"no answer within {CONNECT_TIMEOUT:g}s"
            if isinstance(exc, TimeoutError)
            else f"failed after {took:.1f}s ({type(exc).__name__}: {exc})"
        )
        raise EndpointError(
            setting, bootstrap, f"Kafka: {what}", "is the broker running and the address right?"
        ) from None


def missing_topic(topic: str, setting: str) -> EndpointError:
    return EndpointError(setting, topic, "the topic does not exist on the broker", "create it or fix the name")


async def topic_partitions(
    admin: AIOKafkaAdminClient, bootstrap: str, topic: str, setting: str
) -> list[TopicPartition]:
    """Every partition of ``topic`` (from a started admin client); ``EndpointError`` if there is none."""
    described = await reach(admin.describe_topics([topic]), bootstrap, setting)
    ids = sorted(p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"])
    if not ids:
        raise missing_topic(topic, setting.rsplit(".", 1)[0] + ".topic")
    return [TopicPartition(topic, p) for p in ids]


async def topic_shape(bootstrap: str, topic: str, setting: str) -> tuple[int, int]:
    """(partitions, replication factor) of an existing ``topic``; ``EndpointError`` if there is none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await reach(admin.start(), bootstrap, setting)
    try:
        described = await reach(admin.describe_topics([topic]), bootstrap, setting)
    finally:
        await admin.close()
    partitions = [p for d in described if d["error_code"] == 0 for p in d["partitions"]]
    if not partitions:
        raise missing_topic(topic, setting.rsplit(".", 1)[0] + ".topic")
    return len(partitions), max(len(p["replicas"]) for p in partitions)
