"""Each SLA fails for the right reason against the real stack, and bad settings exit 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_check.config import PipelineConfig
from pipeline_check.core.errors import ExitCode
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.stack.local import LocalStack
from tests.e2e.conftest import AfterInjected

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CONFIG = Path(__file__).parents[2] / "compose" / "pipeline.toml"


def validate(stack: PipelineStack, *args: str, config: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    """The CLI, as a deploy gate runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", "validate", "-c", str(config), *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def failed_checks(report: Path) -> dict[str, dict[str, object]]:
    doc = json.loads(report.read_text())
    return {c["threshold"]: c for c in doc["checks"] if c["status"] != "passed"}


def test_impossible_freshness_fails_with_the_observed_p99(pipeline_stack: PipelineStack, tmp_path: Path) -> None:
    report = tmp_path / "v.json"
    done = validate(
        pipeline_stack, "--scenario", "smoke", "--rate", "50", "--threshold", "e2e.p99 < 1ms", "--json", str(report)
    )
    assert done.returncode == ExitCode.VERDICT_FAILED, done.stdout + done.stderr
    failed = failed_checks(report)
    assert "e2e.p99 < 1ms" in failed and failed["e2e.p99 < 1ms"]["status"] == "failed", failed
    assert isinstance(failed["e2e.p99 < 1ms"]["observed"], float) and failed["e2e.p99 < 1ms"]["observed"] > 0.001
    assert "e2e.p99 < 1ms" in done.stdout


def test_throughput_floor_above_the_offered_rate_is_refused_at_load(
    pipeline_stack: PipelineStack, tmp_path: Path
) -> None:
    """A floor the run would never inject at could only be missed by the validator itself: exit 2 before
    anything runs, naming the rate and the floor."""
    report = tmp_path / "v.json"
    args = ("--scenario", "smoke", "--count", "500", "--rate", "50", "--threshold", "throughput >= 500/s")
    done = validate(pipeline_stack, *args, "--json", str(report))
    assert done.returncode == ExitCode.USAGE_ERROR, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: --rate=50.0 ") and "'throughput >= 500/s' floor" in error, error
    assert not report.exists()


@pytest.mark.resilience
@pytest.mark.parametrize(("service", "stuck_after"), [("consumer", "kafka"), ("api", "iceberg")])
def test_service_stopped_mid_run_loses_canaries_stuck_where_it_stands(
    service: str,
    stuck_after: str,
    validator: Validator,
    pipeline_config: PipelineConfig,
    local_stack: LocalStack,
    tmp_path: Path,
) -> None:
    report = tmp_path / "v.json"
    stop = AfterInjected(100, lambda: local_stack.stop(service))
    outcome = validator(count=400, rate=100, drain_timeout="6s", handlers=[stop, JsonReporter(report)])
    assert outcome.exit_code == ExitCode.VERDICT_FAILED
    failed = failed_checks(report)
    lost = json.loads(report.read_text())["lost"]
    assert "lost == 0" in failed and failed["lost == 0"]["observed"] == lost["count"] > 0, failed
    # every lost canary is named, and all of them stopped right before the stopped service
    assert set(lost["stuck"]) == {stuck_after}, lost["stuck"]
    assert len(lost["stuck"][stuck_after]) == lost["count"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("PC_API_URL", "http://127.0.0.1:{port}", "stages.api.base_url"),
        ("PC_KAFKA_BOOTSTRAP", "127.0.0.1:{port}", "stages.kafka.bootstrap"),
    ],
)
def test_unreachable_endpoint_exits_2_naming_setting_and_endpoint(
    pipeline_stack: PipelineStack, variable: str, value: str, names: str
) -> None:
    endpoint = value.format(port=closed_port())
    env = {**pipeline_stack.env(), variable: endpoint}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", "validate", "-c", str(CONFIG), "--scenario", "smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.USAGE_ERROR, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and names in error[0] and endpoint in error[0], done.stderr
    assert "Traceback" not in done.stderr


def test_no_subscriber_on_the_feed_port_exits_2(pipeline_stack: PipelineStack, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    text = CONFIG.read_text().replace('port = "${PC_FEED_PORT:-18765}"', f"port = {closed_port()}")
    config.write_text(text.replace('subscribe_timeout = "30s"', 'subscribe_timeout = "2s"'))
    done = validate(pipeline_stack, "--scenario", "smoke", config=config)
    assert done.returncode == ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "source.port" in done.stderr and "no ingestor subscribed within 2s" in done.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('tag_field = "t"', 'tag_feld = "t"'), "stages.kafka.tag_feld"),
        (('"e2e.p99 < 30s"', '"e2e.p99 < 30"'), "write it with a unit"),
        (('group = "iceberg-writer"', 'group = "${PC_NO_SUCH_VARIABLE}"'), "PC_NO_SUCH_VARIABLE is not set"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    pipeline_stack: PipelineStack, tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG.read_text().replace(*change))
    done = validate(pipeline_stack, config=config)
    assert done.returncode == ExitCode.USAGE_ERROR, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
