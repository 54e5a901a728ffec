"""Asking a Kafka cluster something while its brokers die, stall and come back.

aiokafka's admin client sends a request to a random broker of its cached metadata; a dead broker stays in
that cache for the whole outage (it is refreshed every 5 minutes), so a request fails whenever the dice
pick it, and a paused broker holds each request open for 40 s. Here each broker gets a short deadline; one
that fails is asked after every other for a while, the metadata is refreshed (a broker the cluster fenced
leaves it), and the next broker is asked at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError

ATTEMPT_TIMEOUT = 2.0  # seconds a broker gets to answer before the next is asked (a paused one never does)
SHUNNED_FOR = 15.0  # seconds a broker that failed is asked after every other (fencing a dead one takes ~9 s)

FAILURES = (KafkaError, OSError, TimeoutError)  # what a broker that is down, stalled or fenced raises


class LiveBrokers:
    """Requests through ``client`` (a started aiokafka client) to brokers that answer."""

    def __init__(self, client: AIOKafkaClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._failed: dict[int, float] = {}  # broker -> when it last failed
        self.failovers = 0  # brokers given up on for another

    async def ask(self, request: Any, node: int | None = None, last: Collection[int] = ()) -> Any:
        """The answer of ``node``, or of the first broker that answers (those that have not failed lately
        first, those in ``last`` after every other); the last failure when none did."""
        error: Exception = KafkaConnectionError("no broker known")
        order = [node] if node is not None else sorted(self.candidates(), key=lambda n: n in last)
        for candidate in order:
            try:
                return await asyncio.wait_for(self.client.send(candidate, request), ATTEMPT_TIMEOUT)
            except FAILURES as exc:
                error = exc
                self.failed(candidate)
        raise error

    def candidates(self) -> list[int]:
        """Known brokers: those that never failed, then the others by how long ago they failed."""
        now = self.clock()

        def shunned(node: int) -> float:
            failed = self._failed.get(node)
            return 0.0 if failed is None else max(0.0, SHUNNED_FOR - (now - failed))

        return sorted((b.nodeId for b in self.client.cluster.brokers()), key=shunned)

    def failed(self, node: int) -> None:
        """``node`` did not answer: ask it last for a while; refresh the metadata in the background."""
        self._failed[node] = self.clock()
        self.failovers += 1
        self.client.force_metadata_update()
