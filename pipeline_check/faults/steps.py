"""Faults as scenario steps: what a ``[[scenarios.NAME.faults]]`` entry and the ``[faults]`` section say.

::

    [faults]                                # what this config owns, and may therefore break
    stack = "stack.toml"                    # a local stack: its services (kill, stop, pause, restart) and
    run_dir = "../.stack"                   #   its Toxiproxy links (latency, cut, reset, bandwidth, slicer)
    toxiproxy = "http://toxiproxy:8474"     # or the Toxiproxy of an external pipeline ...
    links = ["consumer-kafka"]              #   ... and the proxies of it faults may act on

    [[scenarios.network-cut.faults]]
    at = "5s"                               # after the first canary is sent
    target = "ingestor-kafka"               # a service, a link, a stage's catalog, or a label (command)
    action = "cut"
    duration = "10s"                        # then undone

A target the config does not own is refused when the file loads (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError

STACK_ACTIONS = ("kill", "stop", "pause", "restart")
NETWORK_ACTIONS = ("latency", "cut", "reset", "bandwidth", "slicer")
Action = Literal[
    "kill", "stop", "pause", "restart", "latency", "cut", "reset", "bandwidth", "slicer", "lock", "command"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultStep(_Model):
    """One fault of a scenario: applied ``at`` after injection starts, undone ``duration`` later."""

    at: NonNegativeDuration
    target: str = Field(min_length=1)
    action: Action
    # how long the fault lasts before it is undone (a killed or stopped service is started again, a paused
    # one continued, a toxic removed, a lock released, `undo` run); 0 for restart (it undoes itself)
    duration: NonNegativeDuration = 0.0
    latency: NonNegativeDuration = 0.5  # latency: added delay ...
    jitter: NonNegativeDuration = 0.0  # ... and its jitter
    rate_kb: int = Field(default=64, ge=1)  # bandwidth: KB/s
    slice_bytes: int = Field(default=64, ge=1)  # slicer: average slice size
    # network actions: which direction of the link; both unless said
    stream: Literal["both", "upstream", "downstream"] = "both"
    command: str | None = None  # command: run at `at` ...
    undo: str | None = None  # ... and this `duration` later (or at the end of the run, whatever happens)
    timeout: Duration = 60.0  # command: how long each may take

    @model_validator(mode="after")
    def _complete(self) -> FaultStep:
        if self.action == "command" and not self.command:
            raise ValueError("action 'command' needs `command` (and usually `undo`)")
        if self.action != "command" and (self.command or self.undo):
            raise ValueError(f"`command` and `undo` belong to action 'command', not {self.action!r}")
        if self.action in ("kill", "stop", "pause", "lock", *NETWORK_ACTIONS) and self.duration == 0:
            raise ValueError(f"action {self.action!r} needs a `duration` (how long before it is undone)")
        return self

    @property
    def label(self) -> str:
        return f"{self.action} {self.target}"


class FaultTargets(_Model):
    """``[faults]``: the targets this config owns."""

    stack: Path | None = None  # a local stack file (relative to the config's folder)
    run_dir: Path | None = None  # where that stack runs (relative to the config's folder)
    toxiproxy: str | None = None  # a Toxiproxy API URL (default: the stack's)
    links: tuple[str, ...] = ()  # its proxies faults may act on (default: the stack's proxies)


@dataclass(frozen=True, slots=True)
class Owned:
    """What faults may act on: a stack's services, Toxiproxy links, stages with a SQLite catalog."""

    services: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    catalogs: tuple[str, ...] = ()

    def check(self, steps: tuple[FaultStep, ...], setting: str) -> None:
        """``ConfigError`` for a step whose target this config does not own (exit 2: never act on it)."""
        for i, step in enumerate(steps):
            if step.action in STACK_ACTIONS:
                known, what = self.services, "a service of the [faults] stack"
            elif step.action in NETWORK_ACTIONS:
                known, what = self.links, "a link ([faults] links or the stack's proxies)"
            elif step.action == "lock":
                known, what = self.catalogs, "a stage with a SQLite catalog"
            else:
                continue  # a command acts on whatever the user's command acts on
            if step.target not in known:
                raise ConfigError(
                    f"{setting}[{i}].target",
                    step.target,
                    f"is not {what}: pipeline-check only breaks what this config owns",
                    f"known: {', '.join(known) or 'none'}",
                )
