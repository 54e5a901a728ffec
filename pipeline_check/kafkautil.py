"""Connecting to Kafka with a deadline, failures turned into an ``EndpointError`` naming the setting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka.errors import KafkaError

from pipeline_check.errors import EndpointError

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0


async def reach(step: Awaitable[T], bootstrap: str, setting: str = "stages.kafka.bootstrap") -> T:
    """Await a connecting step (start a client, fetch metadata) or explain why Kafka is unreachable."""
    try:
        return await asyncio.wait_for(step, CONNECT_TIMEOUT)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise EndpointError(
            setting,
            bootstrap,
            f"Kafka does not answer within {CONNECT_TIMEOUT:g}s ({type(exc).__name__})",
            "is the broker running and the address right?",
        ) from None


def missing_topic(topic: str, setting: str = "stages.kafka.topic") -> EndpointError:
    return EndpointError(setting, topic, "the topic does not exist on the broker", "create it or fix the name")
