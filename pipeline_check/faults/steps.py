"""Faults as scenario steps: what a ``[[scenarios.NAME.faults]]`` entry and the ``[faults]`` section say.

::

    [faults]                                # what this config owns, and may therefore break
    stack = "stack.toml"                    # a local stack: its services (kill, stop, pause, restart) and
    run_dir = "../.stack"                   #   its Toxiproxy links (latency, cut, reset, bandwidth, slicer)
    toxiproxy = "http://toxiproxy:8474"     # or the Toxiproxy of an external pipeline ...
    links = ["consumer-kafka"]              #   ... and the proxies of it faults may act on
    bootstrap = "127.0.0.1:19092"           # where broker targets are looked up (default: a Kafka stage's)

    [[scenarios.network-cut.faults]]
    at = "5s"                               # after the first canary is sent
    target = "ingestor-kafka"               # a service, a link, a stage's catalog, or a label (command)
    action = "cut"
    duration = "10s"                        # then undone

    [[scenarios.leader-kill.faults]]        # Kafka brokers of the stack, named by their role when applied:
    at = "5s"
    target = "leader:market.trades.raw/0"   # the broker leading that partition (follower:T/P: one in-sync
    action = "kill"                         #   follower, followers:T/P: every other replica)
    duration = "15s"

    [[scenarios.rolling-restart.faults]]
    at = "5s"
    target = "brokers"                      # every broker of the stack, one at a time: stopped, started,
    action = "rolling-restart"              #   and back in every ISR before the next

A target the config does not own is refused when the file loads (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError

STACK_ACTIONS = ("kill", "stop", "pause", "restart")
NETWORK_ACTIONS = ("latency", "cut", "reset", "bandwidth", "slicer")
ROLLING_RESTART = "rolling-restart"
ALL_BROKERS = "brokers"  # the rolling restart's target
Action = Literal[
    "kill",
    "stop",
    "pause",
    "restart",
    "rolling-restart",
    "latency",
    "cut",
    "reset",
    "bandwidth",
    "slicer",
    "lock",
    "command",
]
Role = Literal["leader", "follower", "followers"]
_BROKER_TARGET = re.compile(r"^(leader|followers?):(?P<topic>[A-Za-z0-9._-]+)/(?P<partition>\d+)$")


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """A broker named by its role for one partition, found when the fault is applied: ``leader:TOPIC/P``
    (the leader), ``follower:TOPIC/P`` (one in-sync follower), ``followers:TOPIC/P`` (every other replica)."""

    role: Role
    topic: str
    partition: int

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"


def broker_target(target: str) -> BrokerTarget | None:
    """``target`` as a :class:`BrokerTarget`; None when it names no role; ValueError when it names one badly."""
    role = target.split(":", 1)[0]
    if ":" not in target or role not in ("leader", "follower", "followers"):
        return None
    match = _BROKER_TARGET.match(target)
    if match is None:
        raise ValueError(f"{target!r}: a broker target is {role}:TOPIC/PARTITION, e.g. {role}:market.trades.raw/0")
    return BrokerTarget(cast(Role, role), match["topic"], int(match["partition"]))


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
        if broker_target(self.target) is not None and self.action not in STACK_ACTIONS:
            raise ValueError(
                f"a broker target takes a service action ({', '.join(STACK_ACTIONS)}), not {self.action!r}"
            )
        if self.action == ROLLING_RESTART and (self.target != ALL_BROKERS or self.duration):
            raise ValueError(f'action {ROLLING_RESTART!r} takes target = "{ALL_BROKERS}" and no `duration`')
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
    # the Kafka cluster whose leaders broker targets name (default: the first Kafka stage's bootstrap)
    bootstrap: str | None = None


def on_brokers(step: FaultStep, brokers: tuple[str, ...]) -> bool:
    """Whether ``step`` acts on Kafka brokers (``brokers``: the stack's), so its leadership is recorded."""
    if step.action == ROLLING_RESTART or broker_target(step.target) is not None:
        return True
    return step.action in STACK_ACTIONS and step.target in brokers


@dataclass(frozen=True, slots=True)
class Owned:
    """What faults may act on: a stack's services (its Kafka brokers among them), Toxiproxy links, stages
    with a SQLite catalog."""

    services: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    catalogs: tuple[str, ...] = ()
    brokers: tuple[str, ...] = ()

    def check(self, steps: tuple[FaultStep, ...], setting: str) -> None:
        """``ConfigError`` for a step whose target this config does not own (exit 2: never act on it)."""
        for i, step in enumerate(steps):
            if step.action == ROLLING_RESTART or broker_target(step.target) is not None:
                if not self.brokers:
                    raise ConfigError(
                        f"{setting}[{i}].target", step.target,
                        "names Kafka brokers, and the [faults] stack has none (services prepared as kafka-kraft)",
                        "point [faults] stack at a stack that runs the cluster's brokers",
                    )  # fmt: skip
                continue
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
