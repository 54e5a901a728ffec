"""One plan per run: the config and the command line worked out once into what a run does.

The CLI and the pytest plugin build a :class:`Plan` (scenario, ``--passive``, overrides, extra thresholds,
``--allow-inconclusive``); every run mode takes it, and nothing below them reads the scenario again. The
plan says which run it is (``mode``), what it injects (``load``), which faults it applies, and what it
judges: ``checks`` on the run's own observations (canaries, or a passive run's samples) and the
production ``gates`` judged beside them (the API's response times, the contract). The rule that picks a
gated run lives here, once (:func:`is_gate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline_check.config import PipelineConfig
from pipeline_check.config.sections import LoadConfig
from pipeline_check.faults.steps import FaultStep
from pipeline_check.verdict.thresholds import API_RESPONSE, CONTRACT, Threshold, parse_threshold

Mode = Literal["injected", "gated", "passive"]


def is_gate(threshold: Threshold) -> bool:
    """A production gate: judged beside the canaries, not on them (the API's response times, the contract)."""
    return threshold.series == API_RESPONSE or threshold.kind == "contract"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run does. ``mode``: ``injected`` (canaries judged by the engine), ``gated`` (injected, with
    the production gates and an API load added) or ``passive`` (nothing injected: each stage sampled).
    ``thresholds`` holds every check in the order it is judged and reported."""

    config: PipelineConfig  # with the run's overrides applied
    scenario: str | None
    mode: Mode
    load: LoadConfig
    faults: tuple[FaultStep, ...]
    thresholds: tuple[Threshold, ...]
    allow_inconclusive: bool = False

    @property
    def passive(self) -> bool:
        return self.mode == "passive"

    @property
    def checks(self) -> tuple[Threshold, ...]:
        """What the run judges on its own observations (an injected run's engine: on the canaries)."""
        return tuple(t for t in self.thresholds if not is_gate(t))

    @property
    def gates(self) -> tuple[Threshold, ...]:
        """The production gates a gated run adds to the engine's checks."""
        return tuple(t for t in self.thresholds if is_gate(t))

    @classmethod
    def build(
        cls,
        config: PipelineConfig,
        scenario: str | None = None,
        *,
        passive: bool = False,
        thresholds: tuple[str, ...] = (),
        allow_inconclusive: bool = False,
        **load: Any,
    ) -> Plan:
        """The plan of a run of ``scenario`` (``passive``: ``--passive`` given), judging ``thresholds`` too
        and with the given load settings (count, rate, background_rate, drain_timeout, ...; None keeps one)."""
        passive = config.is_passive(scenario, passive)
        patched = config.with_overrides(scenario, thresholds=thresholds, passive=passive, **load)
        judged = tuple(patched.thresholds_for(scenario, passive=passive))
        run_load = patched.load_for(scenario)
        mode: Mode = "passive"
        if not passive:
            mode = "gated" if run_load.api_concurrency or any(is_gate(t) for t in judged) else "injected"
        faults = patched.scenario(scenario).faults if scenario is not None else ()
        return cls(patched, scenario, mode, run_load, faults, judged, allow_inconclusive)

    @classmethod
    def contract_check(cls, config: PipelineConfig) -> Plan:
        """A passive run that checks the contract only (``pipeline-check contract``): it samples nothing."""
        contract = parse_threshold(CONTRACT, config.stage_names(), "contract")
        return cls(config, None, "passive", config.load, (), (contract,))
