"""Stack commands on the cluster profile (`make test-e2e-cluster`): commands that name no profile act on the
cluster that runs, others are refused, status says when a service died, and down stops it all. Last of the
cluster suites (it stops the session's cluster through the command line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.record import RECORD_FILE

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

COMPOSE = Path(__file__).parents[2] / "compose"


def cli(cluster: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``pipeline-check stack ARGS --run-dir <the cluster's>``, naming no stack file or profile."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", "stack", *args, "--run-dir", str(cluster.spec.run_dir)],
        cwd=COMPOSE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_commands_that_name_no_profile_act_on_the_cluster(cluster: LocalStack) -> None:
    """It stops the cluster through the command line (and leaves it stopped: the session is over)."""
    cluster.up()
    status = cli(cluster, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "market-data-cluster" in status.stdout and "trogdor-agent2" in status.stdout
    up = cli(cluster, "up")  # the default stack would collide with the cluster's ports
    assert up.returncode == 2 and "profile 'cluster' runs in" in up.stderr, up.stderr
    other = cli(cluster, "status", "--profile", "lakehouse")
    assert other.returncode == 2 and "not profile 'lakehouse'" in other.stderr, other.stderr
    crashed = psutil.Process(cluster.pid("api") or 0)  # the API dies behind the driver's back
    crashed.kill()
    crashed.wait(10)
    unhealthy = cli(cluster, "status")
    assert unhealthy.returncode == 1 and "api (exited)" in unhealthy.stderr, unhealthy.stdout + unhealthy.stderr

    down = cli(cluster, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert cluster.running() == []
    assert not (cluster.spec.record_dir / RECORD_FILE).exists()
    after = cli(cluster, "status")
    assert after.returncode == 1 and "market-data-cluster" not in after.stdout
