"""The reference pipeline fed in an exchange's protocol over ``wss://``, with an ingestor that drops every
symbol it did not subscribe to: Binance combined streams with a SUBSCRIBE frame, and Kraken v2. Each
dialect's example settings (compose/pipeline.*.toml) are validated through the CLI, as a user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline_check.config import load_config
from pipeline_check.core.errors import ExitCode
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMPOSE = Path(__file__).parents[2] / "compose"
# 15 s of injection: the delivered rate is judged over five of the pipeline's batch intervals at least
COUNT, RATE = 300, 20
# each set keys to the three partitions of the raw topic (murmur2 by symbol)
BINANCE = {
    "FEED_MODE": "binance-combined",
    "FEED_URL": "wss://127.0.0.1:{feed}/stream?streams=btcusdt@trade",
    "FEED_SYMBOLS": "SOLUSDT,LTCUSDT",
    "DROP_UNSUBSCRIBED": "1",
}
KRAKEN = {
    "FEED_MODE": "kraken",
    "FEED_URL": "wss://127.0.0.1:{feed}/v2",
    "FEED_SYMBOLS": "BTC/USD,SOL/USD,ADA/USD",
    "DROP_UNSUBSCRIBED": "1",
}


def ingestor(stack: LocalStack, env: dict[str, str]) -> None:
    """The stack's ingestor with ``env`` (restarted only when it runs otherwise); its FEED_CA_FILE stays
    the stack's default, ``<run dir>/feed-tls/feed-ca.pem``, where the validator writes each run's CA."""
    stack.ensure("ingestor", {k: v.format(feed=stack.spec.ports["feed"]) for k, v in env.items()})


def feed_env(pipeline_stack: PipelineStack, stack: LocalStack, **extra: str) -> dict[str, str]:
    return {**pipeline_stack.env(), "PC_FEED_TLS_DIR": str(stack.spec.run_dir / "feed-tls"), **extra}


def validate_cli(env: dict[str, str], example: str, report: Path) -> dict[str, Any]:
    """``pipeline-check validate`` on a compose example, COUNT canaries at RATE; the JSON report."""
    config, junit = str(COMPOSE / example), str(report.with_suffix(".xml"))
    command = [sys.executable, "-m", "pipeline_check.cli", "validate", "-c", config, "--count", str(COUNT)]
    done = subprocess.run(
        [*command, "--rate", str(RATE), "--json", str(report), "--junit", junit],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    doc: dict[str, Any] = json.loads(report.read_text())
    return doc


def subscriber_notes(doc: dict[str, Any]) -> list[str]:
    return [n for n in doc["notes"] if n.startswith("subscriber ")]


def test_binance_combined_streams_over_wss(pipeline_stack: PipelineStack, local_stack: LocalStack, tmp_path: Path):
    ingestor(local_stack, BINANCE)
    # connections last 2 s: the ingestor reconnects and subscribes again twice during the run
    env = feed_env(pipeline_stack, local_stack, PC_FEED_MAX_AGE="2s")
    doc = validate_cli(env, "pipeline.binance-wss.toml", tmp_path / "binance.json")
    assert {c["status"] for c in doc["checks"]} == {"passed"}, doc["checks"]
    ca = local_stack.spec.run_dir / "feed-tls" / "feed-ca.pem"
    assert any(f"signed by the CA in {ca}" in n for n in doc["notes"]), doc["notes"]
    assert "canaries ride the subscribed symbols BTCUSDT, LTCUSDT, SOLUSDT" in doc["notes"]
    notes = subscriber_notes(doc)
    assert len(notes) >= 2 and all("(btcusdt@trade, solusdt@trade, ltcusdt@trade)" in n for n in notes), notes
    assert any("closed at the maximum connection age (2s)" in n for n in notes), notes


def test_kraken_v2_over_wss(pipeline_stack: PipelineStack, local_stack: LocalStack, tmp_path: Path):
    ingestor(local_stack, KRAKEN)
    doc = validate_cli(feed_env(pipeline_stack, local_stack), "pipeline.kraken.toml", tmp_path / "kraken.json")
    assert {c["status"] for c in doc["checks"]} == {"passed"}, doc["checks"]
    assert doc["corrupted"]["compared"], "no stage compared fields"
    (note,) = subscriber_notes(doc)
    assert "on /v2 (trade:BTC/USD, trade:SOL/USD, trade:ADA/USD)" in note and f": {COUNT} canaries" in note, note


def test_own_symbol_canaries_are_dropped_by_the_filtering_ingestor(
    pipeline_stack: PipelineStack, local_stack: LocalStack, validator: Validator
):
    """What ``canaries_ride = "subscribed"`` is for: on their own symbol, the ingestor drops them all."""
    ingestor(local_stack, BINANCE)
    config = load_config(COMPOSE / "pipeline.binance-wss.toml", feed_env(pipeline_stack, local_stack))
    source = config.source.model_copy(
        update={"settings": config.source.settings.model_copy(update={"canaries_ride": "own"})}
    )
    config = config.model_copy(update={"source": source}).only_stages("kafka")
    health_url = f"http://127.0.0.1:{local_stack.spec.ports['ingestor']}/health"
    dropped_before = httpx.get(health_url, timeout=5).json()["dropped"]
    outcome = validator(config=config, count=20, rate=20, drain_timeout="3s")
    lost = outcome.result("lost == 0")
    assert lost.status == Status.FAILED and lost.observed == 20, lost.detail
    assert httpx.get(health_url, timeout=5).json()["dropped"] - dropped_before >= 20
