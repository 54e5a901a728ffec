"""``pipeline-check watch``: canaries at a low steady rate for ever, SLAs judged over a sliding window,
figures served to Prometheus.

How a canary's fate is decided: it is **lost** once it is older than the freshness threshold (the
largest upper bound of the config's ``e2e`` latency thresholds, 30 s without one) plus ``grace`` and the
final stage has not seen it; seen by then, it was delivered on time. Availability is the share of the
window's canaries delivered on time, as Xinfra Monitor defines it.

Memory is bounded: canaries live in a fixed ring, and the probes' own per-run state is dropped with
their generation (see :mod:`pipeline_check.runs.watch.generation`). Tags never repeat in a process: every
generation gets a larger run id, and a restart takes a new one from the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline_check.backends.capabilities import INJECTORS
from pipeline_check.backends.injector import Injector, InjectorContext, steer
from pipeline_check.backends.probe import first_placement
from pipeline_check.canary.coverage import Placement, covering_symbols
from pipeline_check.canary.tags import MAX_SEQ, RunId
from pipeline_check.canary.trades import Trade, TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError
from pipeline_check.reporting.json import check_dict, iso_utc, json_safe, load_dict
from pipeline_check.runs.pacing import MAX_BACKLOG
from pipeline_check.runs.plan import Plan
from pipeline_check.runs.watch.generation import ProbeSet
from pipeline_check.runs.watch.metrics import WatchMetrics
from pipeline_check.runs.watch.notes import Notes
from pipeline_check.runs.watch.ring import CanaryRing, Generation
from pipeline_check.runs.watch.server import StatusServer, parse_listen
from pipeline_check.runs.watch.window import WindowVerdict, judge
from pipeline_check.verdict.evaluation import NOTHING_DELIVERED
from pipeline_check.verdict.thresholds import Threshold, e2e_bound

DEFAULT_FRESHNESS = 30.0  # seconds: the default e2e.p99 threshold, when the config has no e2e bound
TICK = 0.1  # how often canaries are closed and probes checked
RING_SLACK = 10.0  # seconds of canaries the ring holds beyond the window and the loss deadline
MAX_RING = 5_000_000  # canaries (about 1 GB with four stages)
GENERATION_SECONDS = 3600.0  # a new run id (and fresh probes) this often: bounds the probes' own state
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between attempts to restart a source or probes
STALE_AFTER = 10.0  # /healthz fails when the watch loop has not run for this long


@dataclass(frozen=True, slots=True)
class WatchSettings:
    rate: float = 1.0  # canaries per second
    window: float = 300.0  # seconds of canaries each evaluation judges
    grace: float = 10.0  # seconds past the freshness threshold before an undelivered canary is lost
    listen: str = "127.0.0.1:9464"
    evaluate_every: float = 5.0
    generation_seconds: float = GENERATION_SECONDS


def loss_deadline(thresholds: Sequence[Threshold], grace: float) -> float:
    """Seconds after injection when an undelivered canary counts as lost: the freshness threshold (the
    largest upper bound on an ``e2e`` latency) plus ``grace``."""
    bound = e2e_bound(thresholds)
    return (DEFAULT_FRESHNESS if bound is None else bound) + grace


def ring_capacity(rate: float, window: float, lost_after: float) -> int:
    """Canaries the ring must hold: the window's, those still open, and slack for a late loop."""
    return max(16, math.ceil(rate * (window + lost_after + RING_SLACK)))


def generation_size(rate: float, seconds: float) -> int:
    """Canaries per run id: ``seconds`` of them, never more than a tag's sequence space (2**26)."""
    return max(1, min(MAX_SEQ + 1, math.ceil(rate * seconds)))


class Watch:
    """A continuous canary over the pipeline of ``plan``, judging its thresholds over a sliding window;
    ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        plan: Plan,
        settings: WatchSettings = WatchSettings(),
        *,
        on_note: Callable[[str], None] | None = None,
        on_verdict: Callable[[WindowVerdict], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config = plan.config
        self.settings = settings
        self.clock = clock or Clock()
        self.thresholds = list(plan.thresholds)
        self.lost_after = loss_deadline(self.thresholds, settings.grace)
        capacity = ring_capacity(settings.rate, settings.window, self.lost_after)
        if capacity > MAX_RING:
            raise ConfigError(
                "--rate", settings.rate,
                f"with a {settings.window:g}s window and a {self.lost_after:g}s loss deadline the watch would keep "
                f"{capacity:,} canaries (at most {MAX_RING:,})",
                "lower --rate or --window",
            )  # fmt: skip
        route = config.route
        checks = dict.fromkeys([*(t.text for t in self.thresholds), NOTHING_DELIVERED])
        self.metrics = WatchMetrics(route.stages, route.final, list(checks))
        self._first_run = RunId.new(self.clock.wall(self.clock.now()))
        messages = config.messages
        content = TradeFactory(
            self._first_run,
            seed=config.load.seed,
            count=capacity,
            symbols=messages.canary_symbols or (messages.symbol,),
            precision=messages.precision,
            scale=messages.scale,
        )
        self.ring = CanaryRing(capacity, route, content, self.clock, self.lost_after, self.metrics)
        self.notes = Notes(on_note)
        self._on_verdict = on_verdict
        host, port = parse_listen(settings.listen)
        self.server = StatusServer(host, port, self.metrics.registry, self.status, self.health)
        self._injector_cls = INJECTORS.get(config.source.type)
        self._generation_size = generation_size(settings.rate, settings.generation_seconds)
        self.active: ProbeSet | None = None
        self.retiring: list[ProbeSet] = []
        self.injector: Injector | None = None
        self._placement: tuple[str, Placement] | None = None  # the stage canaries are steered on, and how
        self.last = WindowVerdict(time.time(), 0, 0, None)
        self._document: dict[str, Any] = {"verdict": "starting"}
        self._ticked: float | None = None
        self._began = self.clock.now()  # the probes' load is per second since then
        self._rotation_wanted = False
        self._retry_at = 0.0
        self._retry = RETRY_FIRST
        self.running = False  # the loop runs: startup is over

    # -- lifecycle --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve, start the probes and the source, then watch until ``stop``; everything started is
        stopped on the way out (probes finished, source closed, server stopped)."""
        self.server.start()
        try:
            if on_listening is not None:
                on_listening(self.server.url)
            await self._watch(stop)
        finally:
            self.running = False
            self.server.stop()

    async def _watch(self, stop: asyncio.Event) -> None:
        inject: asyncio.Task[None] | None = None
        try:
            self.active = await self._start_generation(self._first_run)
            await self._choose_symbols(self.active)
            self.injector = await self._start_injector()
            inject = asyncio.create_task(self._inject(), name="watch:inject")
            self.running = True
            next_evaluation = self.clock.now()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK)
                if inject.done():
                    inject.result()  # it never ends by itself: an error there is a bug
                await self._tick()
                if self.clock.now() >= next_evaluation:
                    self.evaluate()
                    next_evaluation = self.clock.now() + self.settings.evaluate_every
        finally:
            if inject is not None:
                inject.cancel()
                await asyncio.gather(inject, return_exceptions=True)
            for probes in [*self.retiring, *([self.active] if self.active else [])]:
                await self._close(probes)
            if self.injector is not None:
                await self.injector.close()

    async def _start_generation(self, run: RunId) -> ProbeSet:
        probes = ProbeSet(
            self.config,
            self.ring,
            Generation(run, self.ring.next_index),
            self.clock,
            self.notes.note,
            rate=self.settings.rate,
            load=self.metrics.probe_load,
        )
        await probes.start()
        return probes

    async def _start_injector(self) -> Injector:
        """A started source, told where the pipeline's producer puts a key when it writes that stage itself."""
        injector: Injector = self._injector_cls(
            self.config.source.settings, InjectorContext(self.clock, self.notes.note)
        )
        if self._placement is not None:
            steer(injector, *self._placement)
        try:
            await injector.start()
        except BaseException:
            await injector.close()
            raise
        return injector

    async def _choose_symbols(self, probes: ProbeSet) -> None:
        """As a validation run does: canaries cover every partition of the first sharded stage, under the
        partitioner its probe finds (explicit ``canary_symbols`` win)."""
        self._placement = await first_placement(probes.stages, probes.probes, self.ring.shards)
        if self._placement is not None and not self.config.messages.canary_symbols:
            self.ring.content.use_symbols(covering_symbols(self.config.messages.symbol, self._placement[1]))

    # -- the loop ---------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Close the canaries whose deadline passed, note failed probes, retire spent generations."""
        now = self.clock.now()
        # Deadlines up to the previous tick only: after a stall of the loop (a long GC pass, a starved
        # CPU) the probes get one look at what arrived meanwhile before the watch calls anything lost.
        if self._ticked is not None:
            self.ring.close_due(self._ticked)
        self.metrics.in_flight.set(self.ring.in_flight)
        sets = [self.active, *self.retiring] if self.active else self.retiring
        for probes in sets:
            for stage, error in probes.failures():
                self.metrics.probe_failures[stage].inc()
                self.notes.note(f"{stage} probe of {probes.gen.run} stopped ({type(error).__name__}: {error})")
                if probes is self.active:
                    self._rotation_wanted = True
        for probes in [p for p in self.retiring if p.gen.end <= self.ring.oldest_open]:
            self.retiring.remove(probes)
            await self._close(probes)
        self._ticked = now

    async def _close(self, probes: ProbeSet) -> None:
        try:
            await probes.close()
        except Exception as exc:  # its canaries are counted already: tell, and go on (or shut down)
            self.notes.note(f"probes of {probes.gen.run} did not finish cleanly ({type(exc).__name__}: {exc})")

    def evaluate(self) -> WindowVerdict:
        """Judge the window now and publish the verdict (metrics, ``/status``)."""
        slots = self.ring.closed_since(self.ring.closed_until - self.lost_after - self.settings.window)
        run = self.active.gen.run if self.active else self._first_run
        verdict = judge(
            self.ring,
            slots,
            self.thresholds,
            run=run,
            rate=self.settings.rate,
            min_samples=self.config.sla.min_samples,
            fed=self._injector_cls.feeds_stage,
        )
        self.metrics.judged(verdict.results, verdict.availability, verdict.canaries)
        changed = verdict.label != self.last.label
        self.last = verdict
        self._document = self._status_document(verdict, run)
        if changed and self._on_verdict is not None:
            self._on_verdict(verdict)
        return verdict

    # -- injection --------------------------------------------------------------------------------------

    async def _inject(self) -> None:
        """One canary every ``1/rate`` seconds on the monotonic clock; behind by more than
        ``MAX_BACKLOG`` (a source that stalled), the schedule moves on rather than bursting."""
        gap = 1 / self.settings.rate
        base = self.clock.now()
        n, behind, paused = 0, 0, False
        while True:
            due = base + n * gap
            now = self.clock.now()
            if now - due > MAX_BACKLOG:
                base, n, due, paused = now, 0, now, True
            if due > now:
                await asyncio.sleep(due - now)
                behind = 0
            else:
                behind += 1
                if behind >= 64:  # behind schedule: still let the probes and the loop run
                    await asyncio.sleep(0)
                    behind = 0
            gen = await self._generation()
            at = self.clock.now()
            trade = self.ring.inject(gen, at, lateness=at - due, paused=paused)
            paused = False
            n += 1
            await self._send(trade)

    async def _send(self, trade: Trade) -> None:
        if self.injector is None:
            raise RuntimeError("watch injecting before its source started")
        try:
            await self.injector.send(trade)
        except Exception as exc:  # the canary counts as lost at the source; the source starts afresh
            self.metrics.injection_failures.inc()
            self.notes.note(f"the source refused a canary ({type(exc).__name__}: {exc}); starting it afresh")
            await self._restart_injector()

    async def _restart_injector(self) -> None:
        old, self.injector = self.injector, None
        if old is not None:
            try:
                await old.close()
            except Exception as exc:
                self.notes.note(f"the old source did not close cleanly ({type(exc).__name__}: {exc})")
        retry = RETRY_FIRST
        while self.injector is None:
            await asyncio.sleep(retry)
            try:
                self.injector = await self._start_injector()
            except Exception as exc:
                retry = min(RETRY_MAX, retry * 2)
                self.notes.note(f"the source cannot start ({type(exc).__name__}: {exc}); retrying")

    async def _generation(self) -> Generation:
        """The generation the next canary joins, after a move to a new one when it is due."""
        if self.active is None:
            raise RuntimeError("watch injecting before its probes started")
        gen = self.active.gen
        if (gen.sent >= self._generation_size or self._rotation_wanted) and self.clock.now() >= self._retry_at:
            await self._rotate()
        while self.active.gen.full:  # no tag left under this run id: wait for probes under a new one
            await asyncio.sleep(max(0.0, self._retry_at - self.clock.now()))
            await self._rotate()
        return self.active.gen

    async def _rotate(self) -> None:
        """Move to a new run id with fresh probes; the current ones watch on until their canaries close."""
        if self.active is None:
            raise RuntimeError("watch rotating before its probes started")
        current = self.active.gen.run
        run = RunId(max(RunId.new(self.clock.wall(self.clock.now())).value, current.value + 1))
        try:
            probes = await self._start_generation(run)
        except Exception as exc:  # an endpoint down right now: keep the current run id, try again later
            self._retry_at = self.clock.now() + self._retry
            self.notes.note(
                f"probes for a new run id cannot start ({type(exc).__name__}: {exc}); retrying in {self._retry:g}s"
            )
            self._retry = min(RETRY_MAX, self._retry * 2)
            return
        self.retiring.append(self.active)
        self.active = probes
        self._rotation_wanted = False
        self._retry = RETRY_FIRST

    # -- what the server shows --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``/status`` document of the last evaluation (read from the server's thread)."""
        return self._document

    def health(self) -> tuple[bool, str]:
        """``/healthz``: the loop runs and has looked at the canaries recently."""
        ticked = self._ticked
        if not self.running or ticked is None:
            return False, "starting"
        age = self.clock.now() - ticked
        if age > STALE_AFTER:
            return False, f"the watch loop last ran {age:.0f}s ago"
        return True, "ok"

    def _status_document(self, verdict: WindowVerdict, run: RunId) -> dict[str, Any]:
        s = verdict.summary
        doc: dict[str, Any] = {
            "verdict": verdict.label,
            "evaluated_at": iso_utc(verdict.evaluated_at),
            "run_id": str(run),
            "rate": self.settings.rate,
            "window": {
                "seconds": self.settings.window,
                "lost_after_s": self.lost_after,
                "canaries": verdict.canaries,
                "on_time": verdict.on_time,
                "first_sent_at": None if verdict.sent_ms is None else iso_utc(verdict.sent_ms[0] / 1000),
                "last_sent_at": None if verdict.sent_ms is None else iso_utc(verdict.sent_ms[1] / 1000),
            },
            "availability": verdict.availability,
            "checks": [check_dict(r) for r in verdict.results],
            "totals": {"injected": self.ring.next_index, "in_flight": self.ring.in_flight},
            "probe_load": {
                stage: load_dict(load.figures(self.clock.now() - self._began))
                for stage, load in self.metrics.probe_load.items()
            },
            "notes": [{"at": iso_utc(at), "note": note} for at, note in self.notes.recent],
        }
        if s is not None:
            doc |= {
                "e2e": {"stage": s.final, "delivered": s.delivered, "latency": s.e2e},
                "stages": {st.name: {"reached": st.reached, "latency": st.latency} for st in s.stages},
                "lost": {"count": s.lost, "stuck": {stage: len(tags) for stage, tags in s.stuck.items()}},
                "duplicates": s.duplicates,
                "corrupted": s.corrupted,
            }
        return json_safe(doc)  # type: ignore[no-any-return]


def run_watch(
    plan: Plan,
    settings: WatchSettings,
    *,
    on_listening: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    on_verdict: Callable[[WindowVerdict], None] | None = None,
) -> None:
    """Watch until SIGTERM or SIGINT, then stop cleanly (also when the signal comes during startup)."""
    watch = Watch(plan, settings, on_note=on_note, on_verdict=on_verdict)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch.run(stop, on_listening))

        def on_signal() -> None:
            stop.set()
            if not watch.running:  # still connecting: nothing to wait for
                task.cancel()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await task
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
