"""One generation of a watch: a run id, the recorder its probes write through, and the probes themselves.

Probes keep per-run state (rows they follow, tags an API showed, snapshots handled), so a watch that
ran one run id for days would grow with them. It moves to a new generation (new run id, new probes)
every so often instead; the old probes keep watching until every canary of theirs is closed, then
finish. Probes are built exactly as :class:`pipeline_check.runs.injected.Run` builds them: through the
registry, with a :class:`~pipeline_check.backends.probe.ProbeContext` whose recorder is this generation's
view of the ring.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from pipeline_check.backends.capabilities import PROBES
from pipeline_check.backends.polling import Pace
from pipeline_check.backends.probe import Probe, ProbeContext, ProbeLoad, Ref
from pipeline_check.canary.time_forms import Instant
from pipeline_check.config import PipelineConfig
from pipeline_check.core.clock import Clock
from pipeline_check.runs.watch.ring import CanaryRing, Generation, Ints
from pipeline_check.trace.stages import SOURCE


class GenerationRecorder:
    """The :class:`~pipeline_check.backends.probe.Recorder` of one generation's probes, over the ring:
    tags of its run id only, and only its open canaries are pending, due or in a window."""

    def __init__(self, ring: CanaryRing, gen: Generation) -> None:
        self.ring = ring
        self.gen = gen

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
        return self.ring.seen(self.gen, stage, tag, at, ref=ref, source_ms=source_ms, copies=copies, timed=timed)

    def diff(
        self, stage: str, tag: object, record: Mapping[str, object], fields: Mapping[str, str], at: float | None = None
    ) -> None:
        self.ring.diff(self.gen, stage, tag, record, fields, at)

    def placed_at(self, stage: str, tag: object, field: str, instant: Instant, shown: str) -> None:
        self.ring.placed_at(self.gen, stage, tag, field, instant, shown)

    def cannot_observe(self, stage: str, what: str, why: str) -> None:
        self.ring.cannot_observe(stage, what, why)

    def declare_shards(self, stage: str, shards: Sequence[int]) -> None:
        self.ring.declare_shards(stage, shards)

    def declare_ordered(self, stage: str) -> None:
        self.ring.declare_ordered(stage)

    def pending_windows_ms(self, stage: str) -> dict[str, tuple[int, int]]:
        return self.ring.windows_ms(self.ring.pending(self.gen, stage))

    def run_windows_ms(self) -> dict[str, tuple[int, int]]:
        """The open canaries' windows: a closed canary's fate is counted, re-reading it changes nothing."""
        return self.ring.windows_ms(self.ring.open_slots(self.gen))

    def due(self, stage: str) -> int:
        return self.ring.due(self.gen, stage)

    def pending_refs(self, stage: str, at: str) -> tuple[Ints, npt.NDArray[np.int32], Ints]:
        return self.ring.pending_refs(self.gen, stage, at)

    def waiting(self, stage: str) -> int:
        """Open canaries ``stage`` should show next: those its upstream stage holds, or, fed by the source,
        those sent (the generation's probe of the stage looks quickly while there are any)."""
        if self.ring.route.upstream[stage] == SOURCE:
            return len(self.ring.pending(self.gen, stage))
        return self.ring.due(self.gen, stage)


class ProbeSet:
    """The probes of one generation: started together, run as tasks, finished together."""

    def __init__(
        self,
        config: PipelineConfig,
        ring: CanaryRing,
        gen: Generation,
        clock: Clock,
        note: Callable[[str], None],
        *,
        rate: float,
        load: Mapping[str, ProbeLoad],
    ) -> None:
        self.gen = gen
        self.recorder = GenerationRecorder(ring, gen)
        self.pace = Pace.for_watch(self.recorder.waiting, rate)
        route = config.route
        self.stages = route.stages
        self.probes: list[Probe] = [
            PROBES.get(section.type)(
                section.settings,
                ProbeContext(
                    stage=section.name,
                    upstream=route.upstream[section.name],
                    clock=clock,
                    run=gen.run,
                    recorder=self.recorder,
                    note=note,
                    load=load[section.name],
                    pace=self.pace,
                ),
            )
            for section in config.stages
        ]
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._attempted: list[Probe] = []
        self._reported: set[str] = set()

    async def start(self) -> None:
        """Start every probe (the baseline before the generation's first canary), then run them; a probe
        that cannot start raises, and the ones started are finished."""
        try:
            for probe in self.probes:
                self._attempted.append(probe)
                await probe.start()
        except BaseException:
            await self.close()
            raise
        self._tasks = {
            stage: asyncio.create_task(probe.run(self._stop), name=f"probe:{self.gen.run}:{stage}")
            for stage, probe in zip(self.stages, self.probes, strict=True)
        }

    def failures(self) -> list[tuple[str, BaseException]]:
        """Probes that stopped on an error since the last call: (stage, error)."""
        failed = []
        for stage, task in self._tasks.items():
            if stage in self._reported or not task.done() or task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                self._reported.add(stage)
                failed.append((stage, error))
        return failed

    async def close(self) -> None:
        """Stop the probes and finish each one it tried to start (a last look, clients closed)."""
        self._stop.set()
        for task in self._tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        attempted, self._attempted = self._attempted, []
        errors: list[Exception] = []
        for probe in attempted:  # one probe that cannot finish must not leave the others' clients open
            try:
                await probe.finish()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
