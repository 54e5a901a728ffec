"""Runs a scenario's faults while canaries flow, records each fault's window, and undoes every fault when
the run ends, whatever ends it (a verdict, an error, Ctrl-C).

A fault's window runs from the moment it is applied to the moment it is undone and the target is back
(a killed service started again and healthy, a toxic removed, a lock released). Blocking work (the stack
driver, Toxiproxy's API, SQLite, commands) runs on worker threads so the probes keep looking meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import EndpointError, StackError
from pipeline_check.faults.steps import FaultStep
from pipeline_check.faults.toxiproxy import Stream, Toxiproxy
from pipeline_check.verdict.summary import FaultWindow

OUTPUT_KEPT = 2000  # characters of a command's output kept for the report


class Services(Protocol):
    """What faults need of a stack driver (``stack.local.LocalStack``)."""

    def kill(self, name: str) -> None: ...

    def stop(self, name: str, timeout: float = ...) -> None: ...

    def revive(self, name: str) -> object: ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Targets:
    """What faults act on at run time: a stack driver, a Toxiproxy, SQLite catalog files by stage."""

    services: Services | None = None
    toxiproxy: Toxiproxy | None = None
    catalogs: dict[str, Path] = field(default_factory=dict)

    def close(self) -> None:
        if self.toxiproxy is not None:
            self.toxiproxy.close()


class _Applied:
    """How to undo one applied fault."""

    def __init__(self, undo: Callable[[], str]) -> None:
        self.undo = undo
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

    async def undo_all(self) -> None:
        """Undo what is still applied, newest first: the end of every run, error and Ctrl-C included;
        then let go of the clients the faults used."""
        try:
            for window, applied in reversed(self._applied):
                await self._undo(window, applied)
        finally:
            self.targets.close()

    async def _step(self, step: FaultStep, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + step.at - self.clock.now()))
        window = FaultWindow(step.label, step.action, step.target, self.clock.now())
        self.windows.append(window)
        self.note(f"fault: {step.label} for {step.duration:g}s")
        undo = await asyncio.to_thread(self._apply, step, window)
        applied = _Applied(undo)
        self._applied.append((window, applied))
        await asyncio.sleep(step.duration)
        await self._undo(window, applied)

    async def _undo(self, window: FaultWindow, applied: _Applied) -> None:
        if applied.done:
            return
        applied.done = True
        output = await asyncio.to_thread(applied.undo)
        window.end = self.clock.now()
        window.output = (window.output + output)[-OUTPUT_KEPT:]
        self.note(f"fault over: {window.label} after {window.end - window.start:.1f}s")

    def _apply(self, step: FaultStep, window: FaultWindow) -> Callable[[], str]:
        """Apply ``step`` (on a worker thread); the function that undoes it."""
        target = step.target
        if step.action in ("kill", "stop", "pause", "restart"):
            services = self._services(step)
            if step.action == "kill":
                services.kill(target)
                return lambda: _done(services.revive(target))
            if step.action == "stop":
                services.stop(target)
                return lambda: _done(services.revive(target))
            if step.action == "pause":
                services.pause(target)

                def resume() -> str:
                    services.resume(target)
                    return ""

                return resume
            services.stop(target)
            services.revive(target)  # healthy again before it returns: the window covers it
            return lambda: ""
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


def _done(_: object) -> str:
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
