"""The Injector protocol; the engine sees only this module and the capability registry.

Adding an injector: one module with a class that has a ``Settings`` model and the methods of
:class:`Injector`, plus one line in :data:`~pipeline_check.backends.capabilities.INJECTORS` (or an entry point
in ``pipeline_check.injectors``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pipeline_check.canary.coverage import Placement
from pipeline_check.canary.trades import Trade
from pipeline_check.core.clock import Clock
from pipeline_check.core.plugins import PluginSettings


@dataclass(frozen=True, slots=True)
class InjectorContext:
    """What an injector gets besides its own settings."""

    clock: Clock
    note: Callable[[str], None]


class Injector(Protocol):
    """Puts messages into the pipeline's source.

    ``start`` binds or connects and returns once the pipeline can receive (for a feed: once the
    ingestor subscribed), raising ``EndpointError`` otherwise. ``send`` hands over one message and may
    wait (backpressure, a subscriber reconnecting); ``flush`` waits until everything sent is handed over.
    ``feeds_stage`` names the stage the injector writes itself (the Kafka injector: ``kafka``), whose
    order is then the validator's, not the pipeline's. Optional hooks (looked up, not required):
    ``sent_record``, ``canary_symbols`` and ``steer`` (see :func:`steer`).
    """

    Settings: ClassVar[type[PluginSettings]]
    feeds_stage: ClassVar[str | None]

    def __init__(self, settings: Any, ctx: InjectorContext) -> None: ...

    @classmethod
    def sent_fields(cls, settings: Any) -> tuple[str, ...]:
        """The fields of the records it sends: what a stage's ``fields`` setting may compare against."""
        ...

    async def start(self) -> None: ...

    async def send(self, trade: Trade) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def steer(injector: Injector, stage: str, placement: Placement) -> bool:
    """Tell an injector that writes ``stage`` itself where the pipeline's producer puts a record's key
    (its optional ``steer`` hook, called before ``start``): its canaries then land there too, so the topic
    keeps one partition per key for the pipeline's consumers and for the next run's partitioner inference.
    True when it was told."""
    hook: Callable[[Placement], None] | None = getattr(injector, "steer", None)
    if stage != injector.feeds_stage or hook is None:
        return False
    hook(placement)
    return True
