"""Scenarios: named runs (``[scenarios.NAME]``, or built in) with their load, thresholds, faults and mode."""

from __future__ import annotations

from typing import Literal

from pipeline_check.config.sections import LoadOverride, _Model
from pipeline_check.core.errors import ConfigError
from pipeline_check.faults.steps import FaultStep


class Scenario(_Model):
    description: str = ""
    mode: Literal["active", "passive"] = "active"  # passive: inject nothing, sample the pipeline's own data
    load: LoadOverride = LoadOverride()
    thresholds: tuple[str, ...] = ()
    # false: judge only this scenario's thresholds, not [sla]'s too (a fault scenario judges freshness
    # per window, not over canaries that met the fault)
    inherit_thresholds: bool = True
    faults: tuple[FaultStep, ...] = ()  # applied while canaries flow (pipeline_check.faults.steps)


BUILTIN_SCENARIOS = {
    # 100 canaries: the fewest that give the default p99 threshold enough samples; over 10 s, so a pipeline
    # that commits every second or so, and stalls now and then, still shows the rate it keeps up with
    "smoke": Scenario(
        description="100 canaries over 10 s: a quick yes/no; detects a loss rate above 3% (95%)",
        load=LoadOverride(count=100, rate=10),
    ),
    "freshness": Scenario(
        description="1,000 canaries at 100/s over background load; freshness and loss (detects a loss rate above 0.3%)",
        load=LoadOverride(count=1000, rate=100, background_rate=200),
    ),
    "throughput": Scenario(
        description="10,000 canaries at 1,000/s: delivered throughput must keep up (detects a loss rate above 0.03%)",
        load=LoadOverride(count=10_000, rate=1000),
        thresholds=("throughput >= 800/s",),
    ),
}


def injects_nothing(scenario: str | None) -> ConfigError:
    """The error for a passive scenario run as an injected one."""
    return ConfigError(
        "--scenario", scenario, 'is a passive scenario (mode = "passive"): it injects nothing',
        "run it with `pipeline-check validate --scenario NAME` (pipeline_check.runs.passive)",
    )  # fmt: skip
