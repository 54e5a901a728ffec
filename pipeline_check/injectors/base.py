"""The Injector protocol and its registry; the engine sees only this."""

from __future__ import annotations

from typing import Protocol

from pipeline_check.clock import Clock
from pipeline_check.config import PipelineConfig
from pipeline_check.events import Note
from pipeline_check.messages import Trade
from pipeline_check.registry import Registry


class Injector(Protocol):
    """Puts messages into the pipeline's source.

    ``start`` binds or connects and returns once the pipeline can receive (for a feed: once the
    ingestor subscribed), raising ``EndpointError`` otherwise. ``send`` hands over one message and may
    wait (backpressure, a subscriber reconnecting); ``flush`` waits until everything sent is handed over.
    """

    def __init__(self, config: PipelineConfig, clock: Clock) -> None: ...

    async def start(self) -> None: ...

    async def send(self, trade: Trade) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...

    def notes(self) -> list[Note]:
        """Notes gathered since the last call (subscribers connecting, pauses)."""
        ...


INJECTORS: Registry[Injector] = Registry("injector", "pipeline_check.injectors")
