"""pipeline-check: prove a streaming data pipeline works end to end.

The library's entry points, imported on first use (the pytest plugin loads this package in every pytest
run, so it stays light): ``load_config(path)`` -> ``PipelineConfig``; ``Plan.build(config, scenario, ...)``;
``run(config, scenario, handlers)`` / ``run_async`` / ``run_plan(plan, handlers)`` -> ``Outcome``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline_check.config import PipelineConfig, load_config
    from pipeline_check.runs.driver import Outcome, run, run_async, run_plan
    from pipeline_check.runs.plan import Plan

__version__ = "0.1.0"
__all__ = ["Outcome", "PipelineConfig", "Plan", "load_config", "run", "run_async", "run_plan"]

_HOMES = {
    "PipelineConfig": "pipeline_check.config",
    "load_config": "pipeline_check.config",
    "Outcome": "pipeline_check.runs.driver",
    "run": "pipeline_check.runs.driver",
    "run_async": "pipeline_check.runs.driver",
    "run_plan": "pipeline_check.runs.driver",
    "Plan": "pipeline_check.runs.plan",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline_check' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
