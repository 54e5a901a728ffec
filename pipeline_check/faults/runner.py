"""Runs a scenario's faults while canaries flow, records each fault's window, and undoes every fault when
the run ends, whatever ends it (a verdict, an error, Ctrl-C).

A fault's window runs from the moment it is applied to the moment it is undone and the target is back
(a killed service started again and healthy, a toxic removed, a lock released; a Kafka broker also back in
the in-sync replicas of every watched partition). Blocking work (the stack driver, Toxiproxy's API, SQLite,
commands) runs on worker threads so the probes keep looking meanwhile.

A target that names a broker by its role (``leader:TOPIC/P``) is resolved when the fault is applied, from
the cluster's metadata (``Targets.leadership``); a fault on brokers records the leaders and in-sync
replicas of the watched partitions before it, during it (the last state seen while it held) and after it
(once every replica is in sync again). On a cluster (more than one broker) a killed or stopped broker is
started again when its fault ends, and the window ends there: the other brokers serve while it boots and
catches up, which "after" waits for (a lone broker is waited for until it answers, as any other service).
A rolling restart stops and starts each broker in turn, the next only once every replica is back in sync.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import subprocess
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import EndpointError, StackError
from pipeline_check.faults.steps import ROLLING_RESTART, FaultStep, broker_target
from pipeline_check.faults.toxiproxy import Stream, Toxiproxy
from pipeline_check.verdict.summary import FaultWindow, PartitionState

OUTPUT_KEPT = 2000  # characters of a command's output kept for the report
IN_SYNC_TIMEOUT = 90.0  # seconds a broker started again gets to rejoin every ISR (else "after" is what it was)
BOOT_TIMEOUT = 180.0  # seconds a broker started again on a cluster gets to answer (three JVMs on two cores)
IN_SYNC_POLL = 0.5
WATCH_POLL = 1.0  # seconds between two looks at the leadership while a fault on brokers holds


class Services(Protocol):
    """What faults need of a stack driver (``stack.local.LocalStack``)."""

    def kill(self, name: str) -> None: ...

    def stop(self, name: str, timeout: float = ...) -> None: ...

    def revive(self, name: str) -> object: ...

    def launch(self, name: str) -> None: ...

    def wait_healthy(self, name: str, timeout: float) -> object: ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...


class Leadership(Protocol):
    """Who leads the watched partitions now (``backends.kafka.leadership.KafkaLeadership``), asked of
    the brokers not in ``held`` first (those a fault holds down would only time out); an ``EndpointError``
    when no broker answers."""

    async def partitions(self, held: Collection[int] = ()) -> dict[str, PartitionState]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Targets:
    """What faults act on at run time: a stack driver, a Toxiproxy, SQLite catalog files by stage, the
    stack's Kafka nodes (node id -> service) and the leadership of the partitions faults watch."""

    services: Services | None = None
    toxiproxy: Toxiproxy | None = None
    catalogs: dict[str, Path] = field(default_factory=dict)
    brokers: Mapping[int, str] = field(default_factory=dict)
    leadership: Leadership | None = None

    async def close(self) -> None:
        try:
            if self.toxiproxy is not None:
                self.toxiproxy.close()
        finally:
            if self.leadership is not None:
                await self.leadership.close()


class _Applied:
    """How to undo one applied fault on ``services``; ``watched``: they are brokers whose partitions are
    recorded; ``booting``: brokers the undo started again without waiting for them."""

    def __init__(self, undo: Callable[[], str], services: tuple[str, ...] = (), watched: bool = False) -> None:
        self.undo = undo
        self.services = services
        self.watched = watched
        self.booting: tuple[str, ...] = ()
        self.done = False


class FaultRunner:
    """Applies ``steps`` on schedule from ``begin()``; ``windows`` says when each held."""

    def __init__(
        self, steps: tuple[FaultStep, ...], targets: Targets, clock: Clock, note: Callable[[str], None]
    ) -> None:
        self.steps = steps
        self.targets = targets
        self.clock = clock
        self.note = note
        self.windows: list[FaultWindow] = []
        self._applied: list[tuple[FaultWindow, _Applied]] = []

    async def run(self) -> None:
        """Every step at its time, concurrently (two faults may overlap); returns when all are undone."""
        t0 = self.clock.now()
        await asyncio.gather(*(self._step(step, t0) for step in self.steps))

    def over_at(self) -> float | None:
        """When the last fault was over (its window ended), once every one is; None before."""
        if len(self.windows) < len(self.steps) or any(math.isnan(w.end) for w in self.windows):
            return None
        return max((w.end for w in self.windows), default=None)

    async def undo_all(self) -> None:
        """Undo what is still applied, newest first: the end of every run, error and Ctrl-C included;
        then let go of the clients the faults used."""
        try:
            for window, applied in reversed(self._applied):
                await self._undo(window, applied, settle=False)
        finally:
            await self.targets.close()

    async def _step(self, step: FaultStep, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + step.at - self.clock.now()))
        window = FaultWindow(step.label, step.action, step.target, self.clock.now())
        self.windows.append(window)
        if step.action == ROLLING_RESTART:
            self.note(f"fault: {step.label}")
            await self._rolling_restart(step, window)
            return
        names = await self._resolve(step, window)
        shown = f" ({', '.join(names)})" if names != (step.target,) else ""
        self.note(f"fault: {step.label}{shown} for {step.duration:g}s")
        undo = await asyncio.to_thread(self._apply, step, window, names)
        applied = _Applied(undo, names, watched=bool(window.partitions))
        if step.action in ("kill", "stop", "restart") and len(self.targets.brokers) > 1:
            applied.booting = tuple(n for n in names if n in self.targets.brokers.values())
        self._applied.append((window, applied))
        until = self.clock.now() + step.duration
        if applied.watched:
            try:
                await asyncio.wait_for(self._watch_held(window), step.duration)
            except TimeoutError:
                pass
        await asyncio.sleep(max(0.0, until - self.clock.now()))
        await self._undo(window, applied)

    async def _undo(self, window: FaultWindow, applied: _Applied, *, settle: bool = True) -> None:
        """Undo one fault; the window ends once its target is back. A fault on brokers then waits (unless
        the run is ending: ``settle`` False) until every replica is in sync again to record "after"."""
        if applied.done:
            return
        applied.done = True
        if applied.watched and "during" not in window.partitions:
            window.partitions["during"] = await self._leaders(window) or {}
        services = self.targets.services
        if applied.booting and services is not None:
            for name in applied.booting:  # the cluster serves meanwhile: the fault is over once it is started
                await asyncio.to_thread(services.launch, name)
            output = ""
        else:
            output = await asyncio.to_thread(applied.undo)
        window.end = self.clock.now()
        window.output = (window.output + output)[-OUTPUT_KEPT:]
        self.note(f"fault over: {window.label} after {window.end - window.start:.1f}s")
        if applied.booting and services is not None and settle:
            for name in applied.booting:  # a broker that does not come back leaves the pipeline broken
                await asyncio.to_thread(services.wait_healthy, name, BOOT_TIMEOUT)
        if applied.watched:
            after = await self._in_sync(window) if settle else await self._leaders(window)
            window.partitions["after"] = after or {}

    async def _watch_held(self, window: FaultWindow) -> None:
        """While the fault holds: the leadership, every ``WATCH_POLL``; the last one seen is "during" (a
        killed leader's partitions led by another once the cluster fenced it)."""
        while True:
            now = await self._leaders(window, quiet=True)
            if now:
                window.partitions["during"] = now
            await asyncio.sleep(WATCH_POLL)

    async def _resolve(self, step: FaultStep, window: FaultWindow) -> tuple[str, ...]:
        """The services ``step`` acts on: its target, or the brokers its role names now. A step on brokers
        records who led the watched partitions before it (``window.partitions``)."""
        target = broker_target(step.target)
        leadership = self.targets.leadership
        if target is None:
            names: tuple[str, ...] = (step.target,)
            if step.action in ("kill", "stop", "pause", "restart") and step.target in self.targets.brokers.values():
                before = await self._leaders(window) if leadership is not None else None
                if before is not None:
                    window.partitions["before"] = before
            window.services = names
            return names
        if leadership is None:
            raise StackError(f"fault {step.label!r}: no Kafka cluster to find the {target.role} on")
        states = await leadership.partitions(self._held())
        state = states.get(target.key)
        if state is None:
            raise StackError(f"fault {step.label!r}: {target.key} is not a partition of the cluster's topics")
        if target.role == "leader":
            nodes = [state.leader] if state.leader >= 0 else []
        elif target.role == "follower":
            nodes = [n for n in state.replicas if n != state.leader and n in state.isr][:1]
        else:
            nodes = [n for n in state.replicas if n != state.leader]
        unknown = [n for n in nodes if n not in self.targets.brokers]
        if not nodes or unknown:
            raise StackError(
                f"fault {step.label!r}: {target.key} has leader {state.leader}, in-sync replicas {list(state.isr)}: "
                f"no {target.role} among the stack's brokers ({dict(self.targets.brokers)})"
            )
        names = tuple(self.targets.brokers[n] for n in nodes)
        window.services = names
        window.brokers = dict(self.targets.brokers)
        window.partitions["before"] = states
        return names

    async def _leaders(self, window: FaultWindow, *, quiet: bool = False) -> dict[str, PartitionState] | None:
        """The watched partitions' leaders now; None (and, unless ``quiet``, a note) when no broker answered."""
        if self.targets.leadership is None:
            return None
        window.brokers = dict(self.targets.brokers)
        try:
            return await self.targets.leadership.partitions(self._held())
        except EndpointError as exc:
            if not quiet:
                self.note(f"fault {window.label}: leadership unknown ({exc})")
            return None

    def _held(self) -> set[int]:
        """The brokers faults hold down now (killed, stopped or paused, not yet undone)."""
        nodes = {name: node for node, name in self.targets.brokers.items()}
        return {nodes[s] for _, a in self._applied if not a.done for s in a.services if s in nodes}

    async def _in_sync(self, window: FaultWindow) -> dict[str, PartitionState]:
        """Once every replica of every watched partition is in sync again (or ``IN_SYNC_TIMEOUT`` passed,
        with a note): the partitions' leadership then."""
        deadline = self.clock.now() + IN_SYNC_TIMEOUT
        states: dict[str, PartitionState] = {}
        while True:
            states = await self._leaders(window, quiet=True) or states
            if states and all(set(s.isr) == set(s.replicas) for s in states.values()):
                return states
            if self.clock.now() >= deadline:
                short = {k: list(s.isr) for k, s in states.items() if set(s.isr) != set(s.replicas)}
                self.note(f"fault {window.label}: replicas not all in sync {IN_SYNC_TIMEOUT:g}s after it: {short}")
                return states
            await asyncio.sleep(IN_SYNC_POLL)

    async def _rolling_restart(self, step: FaultStep, window: FaultWindow) -> None:
        """Each broker in node order: stopped (a controlled shutdown hands its leaderships over), started,
        and every replica back in sync before the next one stops; the window ends once the last one is
        started again."""
        services = self._services(step)
        brokers = dict(sorted(self.targets.brokers.items()))
        if not brokers:
            raise StackError(f"fault {step.label!r}: the stack has no Kafka brokers")
        window.services = tuple(brokers.values())
        window.brokers = brokers
        before = await self._leaders(window)
        if before is not None:
            window.partitions["before"] = before
        names = list(brokers.values())
        for i, name in enumerate(names):
            began = self.clock.now()
            await asyncio.to_thread(services.stop, name)
            applied = _Applied(partial(_revive, services, name), (name,))
            self._applied.append((window, applied))  # revived whatever ends the run
            if i == 0:
                window.partitions["during"] = await self._leaders(window) or {}
            if i < len(names) - 1:
                await asyncio.to_thread(services.revive, name)
                applied.done = True
            else:  # the last one started again: the restart is over (the others serve while it boots)
                await asyncio.to_thread(services.launch, name)
                applied.done = True
                window.end = self.clock.now()
                self.note(f"fault over: {window.label} after {window.end - window.start:.1f}s")
                await asyncio.to_thread(services.wait_healthy, name, BOOT_TIMEOUT)
            up = self.clock.now() - began
            window.partitions["after"] = await self._in_sync(window)
            window.output += f"{name}: back after {up:.1f}s, in sync after {self.clock.now() - began:.1f}s\n"

    def _apply(self, step: FaultStep, window: FaultWindow, names: tuple[str, ...]) -> Callable[[], str]:
        """Apply ``step`` to ``names`` (its target's services; on a worker thread); the function that undoes it."""
        target = step.target
        if step.action in ("kill", "stop", "pause", "restart"):
            services = self._services(step)
            if step.action == "pause":
                for name in names:
                    services.pause(name)

                def resume() -> str:
                    for name in names:
                        services.resume(name)
                    return ""

                return resume
            for name in names:
                (services.kill if step.action == "kill" else services.stop)(name)

            def revive() -> str:  # a restart is a stop undone at once: the window covers both
                for name in names:
                    services.revive(name)
                return ""

            return revive
        if step.action == "lock":
            return _lock(self.targets.catalogs[target])
        if step.action == "command":
            window.output = _command(step.command or "", step.timeout)
            return lambda: _command(step.undo, step.timeout) if step.undo else ""
        return self._toxics(step)

    def _services(self, step: FaultStep) -> Services:
        if self.targets.services is None:
            raise StackError(f"fault {step.label!r}: no local stack to act on ([faults] stack)")
        return self.targets.services

    def _toxics(self, step: FaultStep) -> Callable[[], str]:
        proxy = self.targets.toxiproxy
        if proxy is None:
            raise EndpointError(
                "faults.toxiproxy", "", f"fault {step.label!r} needs a Toxiproxy", "set [faults] toxiproxy"
            )
        streams: tuple[Stream, ...] = ("upstream", "downstream") if step.stream == "both" else (step.stream,)
        names: list[str] = []
        for stream in streams:
            name = f"pc-{step.action}-{stream}"
            if step.action == "latency":
                names.append(
                    proxy.latency(
                        step.target, int(step.latency * 1000), int(step.jitter * 1000), stream=stream, name=name
                    )
                )
            elif step.action == "cut":
                names.append(proxy.cut(step.target, stream=stream, name=name))
            elif step.action == "reset":
                names.append(proxy.reset_peer(step.target, stream=stream, name=name))
            elif step.action == "bandwidth":
                names.append(proxy.bandwidth(step.target, step.rate_kb, stream=stream, name=name))
            else:
                names.append(proxy.slicer(step.target, step.slice_bytes, stream=stream, name=name))

        def undo() -> str:
            for name in names:
                proxy.remove_toxic(step.target, name)
            return ""

        return undo


def _revive(services: Services, name: str) -> str:
    services.revive(name)
    return ""


def _lock(catalog: Path) -> Callable[[], str]:
    """Hold an exclusive transaction on a SQLite catalog: every reader and writer waits or fails."""
    connection = sqlite3.connect(catalog, timeout=30, check_same_thread=False, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")

    def release() -> str:
        connection.execute("ROLLBACK")
        connection.close()
        return ""

    return release


def _command(command: str, timeout: float) -> str:
    """Run a user's command (shell); its output, and its exit status when not 0, for the report."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"$ {command}\n(timed out after {timeout:g}s)\n"
    status = "" if done.returncode == 0 else f"(exit {done.returncode})\n"
    return f"$ {command}\n{done.stdout}{done.stderr}{status}"
