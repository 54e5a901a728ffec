"""The Sampler protocol: a stage type's passive sampler.

A sampler looks at one stage from the outside, like a probe, but follows no canary: each ``sample``
reads how fresh the stage's data is by the pipeline's own timestamps (broker times, snapshot times,
event-time columns and fields). It takes the stage's own settings model, so ``[stages.NAME]`` configures
a probe and a sampler alike.

Adding a sampler: a class with ``Settings`` (the probe type's settings model), ``provides`` (the series
families it gives, see :data:`pipeline_check.verdict.thresholds.PASSIVE_FAMILIES`) and the methods of
:class:`Sampler`, registered as its stage type's ``sampler`` in :mod:`pipeline_check.backends.capabilities` (or an
entry point in the ``pipeline_check.samplers`` group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pipeline_check.core.clock import Clock
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.response_times import ResponseTimes


@dataclass(frozen=True, slots=True)
class SamplerContext:
    """What a sampler gets besides the stage's settings."""

    stage: str
    clock: Clock
    note: Callable[[str], None]
    responses: ResponseTimes  # the run's API response times: every API request is timed into it
    symbols: tuple[str, ...]  # what an API is asked about
    event_time: str | None  # passive.event_time of this stage, when set
    window: float  # seconds the run samples for


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at a stage.

    ``values``: series family -> value (seconds of age; records for ``lag_records``), clamped at 0.
    ``position``: what moves when the stage gets new data (end offsets, snapshot id, newest time); None
    when the stage holds nothing. ``backlog``: data is waiting for the stage (a consumer group's lag).
    ``ahead_s``: how far the stage's newest timestamp lies in the future of this machine's clock.
    """

    values: dict[str, float] = field(default_factory=dict)
    position: Any = None
    backlog: bool = False
    ahead_s: float = 0.0
    detail: str = ""  # what the newest data is, for the report


def age(now_ms: float, newest_ms: float) -> tuple[float, float]:
    """(seconds ``newest_ms`` lies before ``now_ms``, clamped at 0; seconds it lies after, 0 if none)."""
    delta = (now_ms - newest_ms) / 1000
    return max(0.0, delta), max(0.0, -delta)


class Sampler(Protocol):
    """Samples one stage's freshness. ``start`` connects (``EndpointError`` when it cannot, ``ConfigError``
    for a setting the stage contradicts); ``sample`` looks once; ``close`` releases everything and runs
    even when ``start`` failed halfway."""

    Settings: ClassVar[type[PluginSettings]]
    provides: ClassVar[tuple[str, ...]]

    def __init__(self, settings: Any, ctx: SamplerContext) -> None: ...

    async def start(self) -> None: ...

    async def sample(self) -> Reading: ...

    async def close(self) -> None: ...
