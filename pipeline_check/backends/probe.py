"""The Probe protocol, what a probe may tell and ask the run (:class:`Recorder`), and the registry of
probe types. The engine sees only this module.

Adding a probe: one module with a class that has a ``Settings`` model (a
:class:`~pipeline_check.core.plugins.PluginSettings`) and the methods of :class:`Probe`, plus one line in
``PROBES`` below (or, from another distribution, an entry point in the ``pipeline_check.probes`` group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from pipeline_check.canary.tags import RunId
from pipeline_check.core.clock import Clock
from pipeline_check.core.plugins import PluginSettings, Registry
from pipeline_check.trace.book import Ref

__all__ = ["PROBES", "Probe", "ProbeContext", "Recorder", "Ref"]


class Recorder(Protocol):
    """The narrow view of the run's trace book a probe gets."""

    def seen(
        self,
        stage: str,
        tag: object,
        at: float,
        *,
        ref: Ref | None = None,
        source_ms: float | None = None,
        copies: int | None = None,
    ) -> bool:
        """A sighting of canary ``tag`` at ``stage`` at monotonic time ``at``; True the first time.
        ``copies`` None counts one more copy (a stream); ``copies=n`` says the stage's current view holds
        ``n`` (a table state, an API answer; 0 after a sighting: it is gone)."""
        ...

    def diff(self, stage: str, tag: object, record: Mapping[str, object], fields: Mapping[str, str]) -> None:
        """Compare the stage's record of ``tag`` with what was sent (``fields``: the stage's setting)."""
        ...

    def declare_shards(self, stage: str, shards: Sequence[int]) -> None:
        """The shards (partitions) the stage has, for coverage."""
        ...

    def declare_ordered(self, stage: str) -> None:
        """The positions the probe records are an order per shard and key."""
        ...

    def pending_windows_ms(self, stage: str) -> dict[str, tuple[int, int]]:
        """Per canary symbol, the send-time window (wall ms) of canaries not yet seen at ``stage``."""
        ...

    def run_windows_ms(self) -> dict[str, tuple[int, int]]:
        """Per canary symbol, the send-time window of every canary injected so far."""
        ...

    def due(self, stage: str) -> int:
        """Canaries the upstream stage holds that ``stage`` has not shown yet."""
        ...

    def pending_refs(
        self, stage: str, at: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """Tags of canaries not yet seen at ``stage`` but seen at ``at``, with their shard and position there."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a probe gets besides its own settings: the stage it watches and its upstream, the run's
    clock and tag range, the recorder, and a way to tell the user something as the run goes."""

    stage: str
    upstream: str
    clock: Clock
    run: RunId
    recorder: Recorder
    note: Callable[[str], None]


class Probe(Protocol):
    """Watches one stage from the outside and tells the recorder when each canary shows up.

    ``start`` connects and takes the baseline (what existed before the run: end offsets, the current
    snapshot) and raises ``EndpointError`` (or ``ConfigError`` for a setting the stage contradicts) if
    the stage cannot be watched. ``run`` observes until ``stop`` is set. ``finish`` makes a last pass
    (late copies, retractions) and releases everything; it runs even when ``start`` failed halfway.
    """

    Settings: ClassVar[type[PluginSettings]]

    def __init__(self, settings: Any, ctx: ProbeContext) -> None: ...

    async def start(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def finish(self) -> None: ...

    @property
    def resolution(self) -> float:
        """Median seconds between two looks at the stage: the precision of its times."""
        ...


PROBES: Registry[Probe] = Registry(
    "probe",
    "pipeline_check.probes",
    {
        "kafka_topic": "pipeline_check.backends.kafka.topic_probe:KafkaTopicProbe",
        "consumer_group": "pipeline_check.backends.kafka.group_probe:ConsumerGroupProbe",
        "iceberg": "pipeline_check.backends.iceberg.probe:IcebergProbe",
        "api": "pipeline_check.backends.api.probe:ApiProbe",
    },
)
