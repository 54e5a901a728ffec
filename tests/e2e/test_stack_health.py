"""The stack itself: start order, health that follows Kafka, and restarts during a stream that lose
nothing (with the recovery time recorded)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from pipeline_check.config import PipelineConfig
from pipeline_check.pytest_plugin import Validator, free_ports
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.spec import load_stack
from tests.e2e.conftest import AfterInjected
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
STACK_FILE = Path(__file__).parents[2] / "compose" / "stack.toml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", "stack", *args], capture_output=True, text=True, timeout=180
    )


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_stack_up_honours_start_order_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    ports = free_ports(list(load_stack(STACK_FILE).ports))
    where = ["--stack-file", str(STACK_FILE), "--run-dir", str(tmp_path)]
    up = cli("up", *where, *(f"--port={n}={p}" for n, p in ports.items()))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = cli("status", *where)
        assert status.returncode == 0
        for service in ("kafka", "consumer", "ingestor", "api"):
            assert any(
                service in line and "running" in line and "healthy" in line for line in status.stdout.splitlines()
            )
        state = json.loads((tmp_path / "state.json").read_text())["services"]
        pids = [state[s]["pid"] for s in ("kafka", "consumer", "ingestor", "api")]
        spec = load_stack(STACK_FILE, run_dir=tmp_path, ports=ports)
        for name in ("consumer", "ingestor", "api"):
            for dep in spec.services[name].depends_on:
                assert state[name]["started_at"] >= state[dep]["healthy_at"], f"{name} started before {dep} was healthy"
    finally:
        down = cli("down", *where)
    assert down.returncode == 0, down.stdout + down.stderr
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after stack down: {alive}"
    taken = [f"{n}={p}" for n, p in ports.items() if n != "feed" and not bindable(p)]
    assert not taken, f"ports still bound after stack down: {taken}"


@pytest.mark.resilience
def test_health_follows_kafka_down_and_back(
    local_stack: LocalStack, record_property: Callable[[str, object], None]
) -> None:
    local_stack.stop("kafka")
    began = time.monotonic()
    for service in ("ingestor", "consumer"):
        wait_for(lambda s=service: not local_stack.health(s).ok, 15, f"{service} reporting unhealthy without Kafka")
    record_property("unhealthy_after_s", round(time.monotonic() - began, 2))
    assert local_stack.health("api").ok, "the API reads the table, not Kafka: it stays healthy"
    local_stack.start("kafka")
    began = time.monotonic()
    for service in ("ingestor", "consumer"):
        wait_for(lambda s=service: local_stack.health(s).ok, 30, f"{service} healthy again after Kafka returned")
    record_property("recovered_after_s", round(time.monotonic() - began, 2))


@pytest.mark.slow
@pytest.mark.resilience
@pytest.mark.parametrize(
    ("service", "how"),
    # a consumer killed between its commits, a broker restarted, an API stopped, a consumer frozen are the
    # resilience scenarios (test_resilience.py); these are the bounces no scenario makes
    [
        ("ingestor", "restart"),
        ("kafka", "kill"),
    ],
)
def test_restart_during_a_stream_loses_nothing(
    service: str,
    how: str,
    validator: Validator,
    pipeline_config: PipelineConfig,
    local_stack: LocalStack,
    record_property: Callable[[str, object], None],
) -> None:
    recovery: list[float] = []

    def bounce() -> None:
        if how == "kill":
            local_stack.kill(service)
            recovery.append(local_stack.start(service).seconds)
        else:
            recovery.append(local_stack.restart(service).seconds)

    restart = AfterInjected(150, bounce)
    # the SLAs a restart must keep: nothing lost, nothing twice, nothing changed (latency may suffer)
    config = pipeline_config.model_copy(
        update={
            "sla": pipeline_config.sla.model_copy(
                update={"thresholds": ("lost == 0", "duplicates == 0", "corrupted == 0")}
            )
        }
    )
    outcome = validator(config=config, count=500, rate=100, drain_timeout="60s", handlers=[restart])
    assert recovery, f"{service} was not restarted during the run"
    record_property("recovery_s", round(recovery[0], 2))
    stages = outcome.finished.summary.stages
    record_property("e2e_max_s", round(stages[-1].since_injection.get("max", float("nan")), 2))
    outcome.check()
