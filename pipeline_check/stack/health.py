"""Health checks a stack service can name in stack.toml: ``kafka``, ``http``, ``tcp``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from pipeline_check.core.asyncutil import run_sync
from pipeline_check.core.log_repeats import collapse_repeats

TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Health:
    """One health check's answer."""

    ok: bool
    detail: str


def check_kafka(bootstrap: str) -> Health:
    """Healthy when the broker answers a metadata request."""
    return run_sync(_kafka_metadata(bootstrap))


async def _kafka_metadata(bootstrap: str) -> Health:
    from aiokafka import AIOKafkaClient  # heavy import, only when a Kafka check runs

    collapse_repeats("aiokafka")  # a broker starting refuses every look: one ERROR line, then a count
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(TIMEOUT * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), TIMEOUT)
        brokers = client.cluster.brokers()
        return Health(bool(brokers), f"{len(brokers)} broker(s) answer metadata requests")
    except Exception as exc:  # any failure to answer is the health verdict, not an error
        return Health(False, f"metadata request failed: {type(exc).__name__}: {exc}".rstrip(": "))
    finally:
        await client.close()


def check_http(url: str) -> Health:
    """Healthy when ``url`` answers 200; the body (trimmed) is the detail."""
    try:
        response = httpx.get(url, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return Health(False, f"GET {url} failed: {type(exc).__name__}")
    body = response.text.strip().replace("\n", " ")[:200]
    return Health(response.status_code == 200, f"HTTP {response.status_code} {body}")


def check_tcp(address: str) -> Health:
    """Healthy when ``host:port`` accepts a TCP connection."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT):
            return Health(True, f"{address} accepts connections")
    except OSError as exc:
        return Health(False, f"{address}: {exc.strerror or exc}")


HEALTH_CHECKS: dict[str, Callable[[str], Health]] = {
    "kafka": check_kafka,
    "http": check_http,
    "tcp": check_tcp,
}
