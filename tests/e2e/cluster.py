"""Helpers of the cluster suites (compose/profiles/cluster.toml, compose/pipeline.cluster.toml): the cluster
config loaded for the session's cluster, a run of it in this process (its faults act through the session's
stack driver, which then knows every process it restarted), its JSON report, what it noted, and the
Trogdor coordinator's view of its tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.runs.driver import Outcome, run_async
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.events import Event, Note

COMPOSE = Path(__file__).parents[2] / "compose"
CONFIG = COMPOSE / "pipeline.cluster.toml"
TOPIC = "market.trades.raw"


class Notes:
    """What the validator noted during a run, for the test's output and assertion messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def handle(self, event: Event) -> None:
        if isinstance(event, Note):
            self.lines.append(event.message)

    def close(self) -> None:
        pass


def cluster_config(cluster: LocalStack, text: str | None = None, tmp_path: Path | None = None) -> PipelineConfig:
    """compose/pipeline.cluster.toml (or ``text``, written beside it in ``tmp_path``) for ``cluster``."""
    env = {**os.environ, **cluster.spec.exports}
    if text is None or tmp_path is None:
        return load_config(CONFIG, env)
    path = tmp_path / "pipeline.cluster.toml"
    path.write_text(text)
    return load_config(path, env)


def validate(
    cluster: LocalStack, scenario: str | None, report: Path, config: PipelineConfig | None = None, **load: Any
) -> tuple[Outcome, dict[str, Any], Notes]:
    """A run of ``scenario`` (its load overridden by ``load``) on ``cluster``, in this process: the outcome,
    the JSON report and the notes (printed for `-rP`)."""
    config = config or cluster_config(cluster)
    if load:
        config = config.with_overrides(scenario, **load)
    notes = Notes()
    try:
        outcome = run_sync(run_async(config, scenario, [JsonReporter(report), notes], stack=cluster))
    finally:
        print("\n".join(f"note: {line}" for line in notes.lines))
    return outcome, json.loads(report.read_text()), notes


def trogdor_tasks(cluster: LocalStack, state: str | None = None) -> dict[str, Any]:
    """The coordinator's tasks (in ``state``), by id (it leaves an empty map out of its answer)."""
    url = cluster.spec.exports["PC_TROGDOR_URL"]
    params = {"state": state} if state else {}
    answer = httpx.get(f"{url}/coordinator/tasks", params=params, timeout=10).json()
    tasks: dict[str, Any] = answer.get("tasks", {})
    return tasks
