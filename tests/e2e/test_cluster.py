"""The cluster profile end to end (`make test-e2e-cluster`): three KRaft brokers with the raw topic replicated
three times (min.insync.replicas 2) and its leaders spread over them; a validation passes over it; a broker
killed while canaries flow loses nothing with the reference pipeline (acks=all); Trogdor's coordinator runs a
ProduceBench task on an agent against the cluster and stops it; commands that name no profile act on the
cluster that runs, others are refused. One cluster for the module, on free ports, stopped after it (the last
test stops it through the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline_check.config import load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.runs.driver import run_async
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.record import RECORD_FILE
from pipeline_check.stack.spec import profile_file
from pipeline_check.verdict.events import Event, Note
from pipeline_check.verdict.status import Status
from tests.e2e.conftest import AfterInjected, profile_stack
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

COMPOSE = Path(__file__).parents[2] / "compose"
PROFILE = profile_file("cluster", COMPOSE / "stack.toml")
CONFIG = COMPOSE / "pipeline.toml"
TOPIC = "market.trades.raw"
NODES = {1: "kafka", 2: "kafka2", 3: "kafka3"}  # node.id -> service
LOSS_CHECKS = ("lost == 0", "duplicates == 0", "corrupted == 0", "incomplete == 0")
# a DescribeConfigs entry set on the topic itself (not a broker default)
TOPIC_CONFIG_SOURCE = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The cluster profile's stack (three brokers, Toxiproxy, consumer, ingestor, API, Trogdor) on free ports."""
    with profile_stack(PROFILE, tmp_path_factory.mktemp("cluster")) as local:
        yield local


def bootstrap(cluster: LocalStack) -> str:
    return cluster.spec.exports["PC_KAFKA_BOOTSTRAP"]


async def _describe(bootstrap: str) -> tuple[int, list[dict[str, Any]], dict[str, tuple[str, int]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        partitions = (await admin.describe_topics([TOPIC]))[0]["partitions"]
        [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
        [resource] = answer.to_object()["resources"]
        entries = {e["config_names"]: (e["config_value"], e["config_source"]) for e in resource["config_entries"]}
        return brokers, sorted(partitions, key=lambda p: p["partition"]), entries
    finally:
        await admin.close()


def leaders(cluster: LocalStack) -> dict[int, int]:
    """partition -> the node id leading it."""
    return {p["partition"]: p["leader"] for p in run_sync(_describe(bootstrap(cluster)))[1]}


async def _end_offsets(bootstrap: str, topic: str) -> int:
    """The records in ``topic`` (0 while it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        return sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
    finally:
        await consumer.stop()
        await admin.close()


def test_three_brokers_a_replicated_topic_and_leaders_spread(cluster: LocalStack) -> None:
    brokers, partitions, configs = run_sync(_describe(bootstrap(cluster)))
    assert brokers == 3
    assert len(partitions) == 3
    for p in partitions:
        assert sorted(p["replicas"]) == [1, 2, 3], p
        assert sorted(p["isr"]) == [1, 2, 3], p
    assert {p["leader"] for p in partitions} == {1, 2, 3}  # one leader per partition, on each broker
    assert configs["min.insync.replicas"] == ("2", TOPIC_CONFIG_SOURCE)  # set by the services on the topic
    assert all(s.ok for s in cluster.status()), [s.problem for s in cluster.status() if not s.ok]


def test_a_validation_passes_over_the_cluster(cluster: LocalStack, tmp_path: Path) -> None:
    report = tmp_path / "validation.json"
    args = ("validate", "-c", str(CONFIG), "--scenario", "smoke", "--json", str(report))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", *args],
        env={**os.environ, **cluster.spec.exports},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["verdict"] == "passed"
    assert {c["name"] for c in result["checks"]} >= set(LOSS_CHECKS)


class Notes:
    """What the validator noted during a run, for the assertion message."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def handle(self, event: Event) -> None:
        if isinstance(event, Note):
            self.lines.append(event.message)

    def close(self) -> None:
        pass


def test_a_broker_killed_during_a_run_loses_nothing(cluster: LocalStack) -> None:
    before = leaders(cluster)
    victim = NODES[before[0]]  # the broker leading partition 0
    killed = AfterInjected(60, lambda: cluster.kill(victim))
    notes = Notes()
    config = load_config(CONFIG, {**os.environ, **cluster.spec.exports})
    config = config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": LOSS_CHECKS})})
    try:
        outcome = run_sync(
            run_async(config.with_overrides(None, count=300, rate=20, drain_timeout="90s"), None, [killed, notes])
        )
        during = leaders(cluster)
    finally:
        cluster.up()  # the killed broker back, for the tests after
    summary = outcome.finished.summary
    assert summary is not None
    hops = ", ".join(
        f"{st.name} {st.latency.get('p99', 0):.1f}/{st.latency.get('max', 0):.1f}s" for st in summary.stages
    )
    print(f"killed {victim}; leaders before {before}, after {during}; hop p99/max: {hops}")
    print("\n".join(f"note: {line}" for line in notes.lines))
    assert victim not in (NODES[node] for node in during.values()), (victim, during)  # leadership moved
    detail = "\n".join(notes.lines[-30:])
    assert outcome.finished.verdict is Status.PASSED, f"{outcome.finished.failed}\n{detail}"
    book = outcome.book
    assert [book.reached(stage) for stage in book.stages] == [300] * len(book.stages), detail


def test_trogdor_runs_a_produce_bench_on_an_agent_and_stops_it(cluster: LocalStack) -> None:
    url = cluster.spec.exports["PC_TROGDOR_URL"]
    agents = cluster.spec.exports["PC_TROGDOR_AGENTS"].split(",")
    assert cluster.spec.trogdor is not None
    agent_urls = {name: f"http://{address}" for name, address in cluster.spec.trogdor.agents.items()}
    assert sorted(agents) == sorted(agent_urls)
    spec = {
        "class": "org.apache.kafka.trogdor.workload.ProduceBenchSpec",
        "durationMs": 600_000,  # longer than the test: it is stopped
        "producerNode": agents[0],
        "bootstrapServers": bootstrap(cluster),
        "targetMessagesPerSec": 1000,
        "maxMessages": 10_000_000,
        "producerConf": {"acks": "all"},
        "activeTopics": {"trogdor.bench": {"numPartitions": 3, "replicationFactor": 3}},
    }
    created = httpx.post(f"{url}/coordinator/task/create", json={"id": "bench-1", "spec": spec}, timeout=30)
    assert created.status_code == 200, created.text

    def task() -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{url}/coordinator/tasks/bench-1", timeout=10).json()
        return answer

    wait_for(lambda: task()["state"] == "RUNNING" or None, 60, "the task running")
    # it produces: records arrive in the topic it created (its own status is reported every 30 s)
    wait_for(lambda: run_sync(_end_offsets(bootstrap(cluster), "trogdor.bench")) >= 1000 or None, 60, "1,000 records")
    workers = httpx.get(f"{agent_urls[agents[0]]}/agent/status", timeout=10).json()["workers"]
    assert [w["taskId"] for w in workers.values()] == ["bench-1"], workers  # on the agent the spec names
    idle = httpx.get(f"{agent_urls[agents[1]]}/agent/status", timeout=10).json()
    assert not idle.get("workers"), idle  # (an empty map is left out of the answer)

    stopped = httpx.put(f"{url}/coordinator/task/stop", json={"id": "bench-1"}, timeout=30)
    assert stopped.status_code == 200, stopped.text
    done = wait_for(lambda: ((t := task())["state"] == "DONE" and t) or None, 60, "the task done")
    assert done["cancelled"] is True and not done.get("error"), done
    sent = done["status"]["totalSent"]
    assert sent == run_sync(_end_offsets(bootstrap(cluster), "trogdor.bench"))  # acks=all: every one is there
    running = httpx.get(f"{url}/coordinator/tasks", params={"state": "RUNNING"}, timeout=10).json()
    assert not running.get("tasks"), running


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
    """Last in the module: it stops the cluster through the command line."""
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
