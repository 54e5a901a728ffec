"""The cluster profile end to end (`make test-e2e-cluster`): three KRaft brokers with the raw topic replicated
three times (min.insync.replicas 2) and its leaders spread over them; a validation passes over it; Trogdor's
coordinator runs a ProduceBench task on an agent against the cluster and stops it. One cluster for the
cluster suites (the session's, on free ports); the faults on its brokers are test_cluster_faults.py's, the
background load through Trogdor test_cluster_background.py's, the stack commands
test_cluster_stack_commands.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline_check.core.asyncutil import run_sync
from pipeline_check.stack.local import LocalStack
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

COMPOSE = Path(__file__).parents[2] / "compose"
CONFIG = COMPOSE / "pipeline.cluster.toml"
TOPIC = "market.trades.raw"
LOSS_CHECKS = ("lost == 0", "duplicates == 0", "corrupted == 0", "incomplete == 0")
# a DescribeConfigs entry set on the topic itself (not a broker default)
TOPIC_CONFIG_SOURCE = 1


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


def test_three_brokers_a_replicated_topic_and_leaders_spread(cluster_up: LocalStack) -> None:
    cluster = cluster_up
    brokers, partitions, configs = run_sync(_describe(bootstrap(cluster)))
    assert brokers == 3
    assert len(partitions) == 3
    for p in partitions:
        assert sorted(p["replicas"]) == [1, 2, 3], p
        assert sorted(p["isr"]) == [1, 2, 3], p
    assert {p["leader"] for p in partitions} == {1, 2, 3}  # one leader per partition, on each broker
    assert configs["min.insync.replicas"] == ("2", TOPIC_CONFIG_SOURCE)  # set by the services on the topic
    assert all(s.ok for s in cluster.status()), [s.problem for s in cluster.status() if not s.ok]


def test_a_validation_passes_over_the_cluster(cluster_up: LocalStack, tmp_path: Path) -> None:
    cluster = cluster_up
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


def test_trogdor_runs_a_produce_bench_on_an_agent_and_stops_it(cluster_up: LocalStack) -> None:
    cluster = cluster_up
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
