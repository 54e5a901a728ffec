"""The lakehouse profile's stack and helpers for its e2e suites (compose/profiles/lakehouse.toml,
compose/pipeline.lakehouse.toml): Avro in Kafka with its schema in the registry stand-in, an Iceberg REST
catalog over moto S3, a query API behind an API key that serves ids as "BINANCE-<id>"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyiceberg.catalog import load_catalog
from pyiceberg.table import Table

from pipeline_check.canary.tags import RunId
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.runs.driver import Outcome, run_async
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.spec import profile_file

COMPOSE = Path(__file__).parents[2] / "compose"
PROFILE = profile_file("lakehouse", COMPOSE / "stack.toml")
CONFIG = COMPOSE / "pipeline.lakehouse.toml"
TOPIC = "market.trades.raw"
# the checks a short run can conclude (a p99 needs 100 canaries, throughput a steady stream)
SHORT_RUN_CHECKS = ("lost == 0", "duplicates == 0", "corrupted == 0", "incomplete == 0", "coverage == 100%")


def environment(local: LocalStack, **extra: str) -> dict[str, str]:
    return {**os.environ, **local.spec.exports, **extra}


def settings(local: LocalStack, text: str | None = None, tmp_path: Path | None = None, **env: str) -> PipelineConfig:
    """compose/pipeline.lakehouse.toml (or ``text`` in its place) pointed at the module's stack."""
    path = CONFIG
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "pipeline.toml"
        path.write_text(text)
    return load_config(path, environment(local, **env))


def validate(config: PipelineConfig, checks: tuple[str, ...] | None = None, **load: Any) -> Outcome:
    """A smoke run (100 canaries over 10 s unless ``load`` says otherwise), judged on ``checks`` if given."""
    if checks is not None:
        config = config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": checks})})
    return run_sync(run_async(config.with_overrides("smoke", **load), "smoke"))


def table(local: LocalStack) -> Table:
    config = settings(local)
    iceberg = config.stage("iceberg")
    assert iceberg is not None
    props: dict[str, str] = iceberg.settings.catalog  # type: ignore[attr-defined]
    return load_catalog("lakehouse", **props).load_table("market.trades")


def canary_rows(local: LocalStack, run: RunId) -> list[dict[str, Any]]:
    scan = table(local).scan(row_filter=f"trade_id >= {run.lo} and trade_id <= {run.hi}")
    rows: list[dict[str, Any]] = scan.to_arrow().to_pylist()
    return rows


def cli(local: LocalStack, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``pipeline-check ARGS`` against the module's stack (reports a config names go under ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", *args],
        cwd=cwd,
        env=environment(local, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_of(outcome: Outcome) -> RunId:
    book = outcome.book
    return book.run
