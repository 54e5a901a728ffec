"""Helpers for e2e tests that talk to the reference pipeline directly (not through the validator)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer
from pyiceberg.catalog import load_catalog
from websockets.asyncio.server import ServerConnection, serve

from pipeline_check.config import PipelineConfig
from pipeline_check.core.polling import poll

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns a truthy value; fail the test naming ``what``."""
    found = poll(check, timeout, initial=0.05)
    assert found, f"{what}: not within {timeout:g}s"
    return found


def trades(symbol: str, count: int, *, first_id: int | None = None, seed: int = 7) -> list[dict[str, Any]]:
    """Binance-format trades with 8-decimal prices and quantities and consecutive ids."""
    rng = random.Random(seed)
    first_id = rng.randrange(10**9, 10**12) if first_id is None else first_id
    now = int(time.time() * 1000)
    return [
        {
            "e": "trade",
            "E": now + i,
            "s": symbol,
            "t": first_id + i,
            "p": f"{rng.randrange(1, 100_000)}.{rng.randrange(10**8):08d}",
            "q": f"{rng.randrange(0, 10)}.{rng.randrange(1, 10**8):08d}",
            "T": now + i,
            "m": rng.random() < 0.5,
            "M": True,
        }
        for i in range(count)
    ]


class Feed:
    """A Binance-style feed on the ingestor's port: the tests' stand-in for the exchange."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.subscribed = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        self.clients.add(ws)
        self.subscribed.set()
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)

    async def send(
        self,
        messages: Iterable[Mapping[str, Any] | str],
        rate: float,
        *,
        at: int | None = None,
        action: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Send at ``rate``/s to every subscriber; run ``action`` once after the ``at``-th message."""
        start = time.monotonic()
        for i, message in enumerate(messages):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            text = message if isinstance(message, str) else json.dumps(message)
            await asyncio.wait_for(self.subscribed.wait(), 30)
            for ws in list(self.clients):
                await ws.send(text)
            if action is not None and i + 1 == at:
                await action()


@asynccontextmanager
async def feed(port: int) -> AsyncIterator[Feed]:
    """Serve the feed on ``port`` and wait (deadline 30 s) until the ingestor subscribed."""
    f = Feed()
    async with serve(f.handler, "127.0.0.1", port, compression=None):
        await asyncio.wait_for(f.subscribed.wait(), 30)
        yield f


def table_rows(exports: Mapping[str, str], symbol: str) -> list[dict[str, Any]]:
    """Every row of ``symbol`` in the Iceberg table (read straight from the catalog)."""
    catalog = load_catalog(
        "local", type="sql", uri=exports["PC_ICEBERG_CATALOG_URI"], warehouse=exports["PC_ICEBERG_WAREHOUSE"]
    )
    table = catalog.load_table("market.trades")
    rows: list[dict[str, Any]] = table.scan(row_filter=f"symbol == '{symbol}'").to_arrow().to_pylist()
    return rows


def api_trades(exports: Mapping[str, str], symbol: str, limit: int = 10_000) -> list[dict[str, Any]]:
    response = httpx.get(f"{exports['PC_API_URL']}/v1/trades", params={"symbol": symbol, "limit": limit}, timeout=10)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def topic_records(bootstrap: str, topic: str, match: Callable[[bytes], bool], timeout: float) -> list[bytes]:
    """Values in ``topic`` (from the beginning) for which ``match`` holds, read until ``timeout``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not found:
            batches = await consumer.getmany(timeout_ms=200)
            found += [r.value for records in batches.values() for r in records if r.value and match(r.value)]
    finally:
        await consumer.stop()
    return found


def without_throughput(config: PipelineConfig) -> PipelineConfig:
    """``config`` with its default checks but the throughput floor: for runs too short to judge a rate."""
    kept = tuple(t for t in config.sla.thresholds if not t.startswith("throughput"))
    return config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": kept})})
