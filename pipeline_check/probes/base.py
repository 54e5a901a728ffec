"""The Probe protocol and its registry; the engine sees only this."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Protocol

from pipeline_check.clock import Clock
from pipeline_check.config import PipelineConfig
from pipeline_check.events import Note
from pipeline_check.registry import Registry
from pipeline_check.trace import TraceBook


class Probe(Protocol):
    """Watches one stage from the outside and records in the trace book when each canary shows up.

    ``start`` connects and takes the baseline (what existed before the run: end offsets, the current
    snapshot) and raises ``EndpointError`` if the stage cannot be reached. ``run`` observes until
    ``stop`` is set. ``finish`` makes a last pass (late copies) and releases everything.
    """

    stage: ClassVar[str]

    def __init__(self, config: PipelineConfig, clock: Clock, book: TraceBook) -> None: ...

    async def start(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def finish(self) -> None: ...

    @property
    def resolution(self) -> float:
        """Median seconds between two looks at the stage: the precision of its times."""
        ...

    def notes(self) -> list[Note]:
        """Notes gathered since the last call (failed queries, pagination limits)."""
        ...


PROBES: Registry[Probe] = Registry("probe", "pipeline_check.probes")
# which probe watches which stage
STAGE_PROBES = {"kafka": "kafka_topic", "consumer": "consumer_group", "iceberg": "iceberg", "api": "api"}
