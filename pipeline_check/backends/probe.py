"""The Probe protocol and what a probe may tell and ask the run (:class:`Recorder`). The engine sees only
this module and the capability registry.

Adding a probe: one module with a class that has a ``Settings`` model (a
:class:`~pipeline_check.core.plugins.PluginSettings`) and the methods of :class:`Probe`, registered as a stage
type's ``probe`` in :mod:`pipeline_check.backends.capabilities` (or, from another distribution, an entry
point in the ``pipeline_check.probes`` group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from pipeline_check.backends.polling import Pace
from pipeline_check.canary.coverage import Placement
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.time_forms import Instant
from pipeline_check.core.clock import Clock
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.trace.book import Ref
from pipeline_check.verdict.probe_load import ProbeLoad
from pipeline_check.verdict.response_times import ResponseTimes

__all__ = [
    "Pace",
    "PlacingProbe",
    "Probe",
    "ProbeContext",
    "ProbeLoad",
    "Recorder",
    "Ref",
    "TimedProbe",
    "first_placement",
    "placement_of",
]


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
        timed: bool = True,
    ) -> bool:
        """A sighting of canary ``tag`` at ``stage`` at monotonic time ``at``; True the first time.
        ``copies`` None counts one more copy (a stream); ``copies=n`` says the stage's current view holds
        ``n`` (a table state, an API answer; 0 after a sighting: it is gone, a later n > 0: it is back).
        ``timed`` False: a look that was not watching for it (a last sweep, a wide search) found it, so
        ``at`` is no arrival time and it gets no latency."""
        ...

    def diff(
        self, stage: str, tag: object, record: Mapping[str, object], fields: Mapping[str, str], at: float | None = None
    ) -> None:
        """Compare a version of the stage's record of ``tag`` with what was sent (``fields``: the stage's
        setting). Call it for every version the stage shows: an unchanged one costs a digest."""
        ...

    def placed_at(self, stage: str, tag: object, field: str, instant: Instant, shown: str) -> None:
        """The stage holds ``tag`` at ``instant`` (its time ``field``, shown as ``shown``): a canary whose
        time moved from its send time is corrupted, naming the field."""
        ...

    def cannot_observe(self, stage: str, what: str, why: str) -> None:
        """The stage cannot observe ``what`` (``retracted``, ``duplicates``), for the reason ``why``."""
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
    clock and tag range, the recorder, and a way to tell the user something as the run goes; the counter
    it adds each request it makes to (``load``: what it cost the system) and how hard the run wants it to
    look (``pace``, read through :class:`~pipeline_check.backends.polling.PollPolicy`)."""

    stage: str
    upstream: str
    clock: Clock
    run: RunId
    recorder: Recorder
    note: Callable[[str], None]
    load: ProbeLoad = field(default_factory=ProbeLoad)
    pace: Pace = field(default_factory=Pace)


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
        """Median seconds between two looks at the stage while canaries waited there: the precision of its
        times (``PollPolicy.resolution``)."""
        ...


@runtime_checkable
class TimedProbe(Protocol):
    """A probe that times every request it makes (the API probe): ``api.response`` judges these times."""

    responses: ResponseTimes


@runtime_checkable
class PlacingProbe(Protocol):
    """A probe of a partitioned stage that can say where a record keyed by a canary's symbol lands (the Kafka
    topic probe: its partitioner, configured or inferred): canary symbols are chosen to cover every partition
    under it, and coverage is judged knowing whether canaries could be steered. Asked once, after ``start``."""

    async def placement(self) -> Placement: ...


async def placement_of(probe: Probe, partitions: int) -> Placement:
    """Where a record keyed by a canary's symbol lands on the probe's stage (``partitions`` of them): what a
    :class:`PlacingProbe` says, else the standard key partitioner."""
    if isinstance(probe, PlacingProbe):
        return await probe.placement()
    return Placement.standard(partitions)


async def first_placement(
    stages: Sequence[str], probes: Sequence[Probe], shards: Mapping[str, Sequence[int]]
) -> tuple[str, Placement] | None:
    """The first sharded stage of the route and where a record keyed by a canary's symbol lands there: the
    placement canaries are steered by; None when no stage has shards."""
    for stage, probe in zip(stages, probes, strict=True):
        if found := shards.get(stage):
            return stage, await placement_of(probe, max(found) + 1)
    return None
