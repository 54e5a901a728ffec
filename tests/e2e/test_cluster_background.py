"""Background load through Trogdor on the cluster (`make test-e2e-cluster`): a run's background trades come
from ProduceBench tasks on the two agents, which reach the rate asked and report it beside the canaries; a
rate they cannot reach is said and keeps the throughput check inconclusive; the tasks stop with the run on
every ending (a verdict, an error, Ctrl-C), as the coordinator's API shows."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline_check.core.errors import StackError
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status
from tests.e2e.cluster import CONFIG, cluster_config, trogdor_tasks, validate
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

RATE = 400  # background trades/s: the agents hold it beside the pipeline on a loaded 2-core machine
UNREACHABLE = 200_000  # two agents beside three brokers on 2 cores send a few tens of thousands


def tasks_of(cluster: LocalStack, run_id: str) -> dict[str, dict[str, object]]:
    return {i: t for i, t in trogdor_tasks(cluster).items() if run_id in i}


def test_background_load_runs_on_the_agents_at_the_rate_asked(cluster_up: LocalStack, tmp_path: Path) -> None:
    outcome, report, notes = validate(
        cluster_up, None, tmp_path / "report.json", count=600, rate=40, background_rate=RATE
    )
    load = report["injection"]["background_load"]
    print(f"background: {json.dumps(load)[:600]}")
    outcome.check()  # throughput included: not validator-limited
    assert load["engine"] == "trogdor" and load["asked_rate"] == RATE
    assert [a["agent"] for a in load["agents"]] == ["agent1", "agent2"]
    assert all(a["sent"] > 0 and not a["error"] for a in load["agents"]), load["agents"]
    assert 0.9 * RATE <= load["achieved_rate"] <= 1.1 * RATE, load
    assert load["seconds"] >= 600 / 40  # it ran for the whole run, canaries first to last
    assert report["injection"]["background"] == 0  # the validator's own process sent none
    # the coordinator's view: one task per agent for this run, each stopped with it
    run_id = report["run"]["run_id"]
    tasks = tasks_of(cluster_up, run_id)
    assert sorted(t["spec"]["producerNode"] for t in tasks.values()) == ["agent1", "agent2"]  # type: ignore[index]
    assert all(t["state"] == "DONE" and t["cancelled"] for t in tasks.values()), tasks
    assert sum(t["status"]["totalSent"] for t in tasks.values()) == load["sent"]  # type: ignore[index]
    assert any("on Trogdor (agent1 200/s, agent2 200/s)" in n for n in notes.lines), notes.lines


def test_a_background_rate_the_agents_cannot_reach_is_said(cluster_up: LocalStack, tmp_path: Path) -> None:
    """The agents asked for far more than two cores give (to a topic of their own, not the pipeline's):
    the run says the pipeline was not tested at that rate, and its throughput check is inconclusive."""
    text = CONFIG.read_text().replace('agents = "${PC_TROGDOR_AGENTS:-agent1,agent2}"', (
        'agents = "${PC_TROGDOR_AGENTS:-agent1,agent2}"\ntopic = "pc.background.unreachable"\n'
        'producer = { "buffer.memory" = "1000000" }'  # a small buffer: stopped, it has little left to send
    ))  # fmt: skip
    config = cluster_config(cluster_up, text, tmp_path)
    create_topic(cluster_up, "pc.background.unreachable")
    outcome, report, _ = validate(cluster_up, "smoke", tmp_path / "report.json", config, background_rate=UNREACHABLE)
    load = report["injection"]["background_load"]
    print(f"asked {UNREACHABLE:,}/s: achieved {load['achieved_rate']:,.0f}/s")
    assert load["achieved_rate"] < 0.9 * UNREACHABLE
    throughput = next(c for c in report["checks"] if c["name"].startswith("throughput"))
    assert (
        throughput["status"] == "inconclusive"
        and "the pipeline was not tested at the rate asked" in throughput["detail"]
    ), throughput
    assert outcome.finished.verdict is Status.INCONCLUSIVE and outcome.exit_code == 1
    assert any("was not tested at the rate asked" in n for n in report["notes"]), report["notes"]


def test_a_run_that_ends_in_an_error_stops_its_tasks(cluster_up: LocalStack, tmp_path: Path) -> None:
    """A fault that cannot be applied (a partition the topic does not have) aborts the run mid-way."""
    text = CONFIG.read_text() + (
        "\n[scenarios.broken]\nload = { count = 2000, rate = 40, background_rate = 200 }\n"
        'faults = [{ at = "3s", target = "leader:market.trades.raw/9", action = "kill", duration = "5s" }]\n'
    )
    config = cluster_config(cluster_up, text, tmp_path)
    with pytest.raises(StackError, match=r"market\.trades\.raw/9 is not a partition"):
        validate(cluster_up, "broken", tmp_path / "report.json", config)
    # stopped as the run aborted; a stopped task reports DONE once its producer has sent what it held
    wait_for(lambda: all(t["state"] == "DONE" for t in trogdor_tasks(cluster_up).values()) or None, 60, "tasks done")
    aborted = json.loads((tmp_path / "report.json").read_text())
    assert aborted["verdict"] == "aborted"
    tasks = tasks_of(cluster_up, aborted["run"]["run_id"])
    assert len(tasks) == 2 and all(t["cancelled"] for t in tasks.values()), tasks


def test_ctrl_c_stops_the_runs_tasks(cluster_up: LocalStack, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {**os.environ, **cluster_up.spec.exports}
    args = ["validate", "-c", str(CONFIG), "--scenario", "background", "--count", "5000", "--json", str(report)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline_check.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    output: list[str] = []

    def injecting() -> bool | None:
        while not lines.empty():
            output.append(lines.get())
            if output[-1].startswith("injected"):  # canaries flow over the background
                return True
        return None

    try:
        wait_for(injecting, 90, "canaries injected")
        running = trogdor_tasks(cluster_up, "RUNNING")
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):  # still running: killed below, its output shown
            proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    injecting()
    assert proc.returncode == 130, "".join(output[-40:])
    assert sorted(t["spec"]["producerNode"] for t in running.values()) == ["agent1", "agent2"], running
    # the run sent the stops before it exited; a stopped task reports DONE once its producer sent what it held
    wait_for(lambda: trogdor_tasks(cluster_up, "RUNNING") == {} or None, 60, "no task running")
    for task_id in running:
        state = trogdor_tasks(cluster_up)[task_id]
        assert state["state"] == "DONE" and state["cancelled"], (task_id, state)
    assert json.loads(report.read_text())["verdict"] == "aborted"


def create_topic(cluster: LocalStack, topic: str) -> None:
    """A three-partition topic on the cluster (the agents only write to topics that exist)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from pipeline_check.core.asyncutil import run_sync

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.spec.exports["PC_KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 3, 3)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    run_sync(create())
