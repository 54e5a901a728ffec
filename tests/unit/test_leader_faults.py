"""Faults on Kafka brokers, on a simulated cluster: targets named by their role resolved when the fault is
applied, the leadership recorded before, during and after, the rolling restart one broker at a time; the
grammar and what a config must own for them; the metadata answer they read."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Collection
from pathlib import Path

import pytest

from pipeline_check.backends.kafka.leadership import parse_metadata
from pipeline_check.config import load_config
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError, StackError
from pipeline_check.faults import runner as runner_module
from pipeline_check.faults.runner import FaultRunner, Targets
from pipeline_check.faults.steps import BrokerTarget, FaultStep, Owned, broker_target
from pipeline_check.verdict.summary import PartitionState

TOPIC = "market.trades.raw"
BROKERS = {1: "kafka", 2: "kafka2", 3: "kafka3"}
SERVICE_NODE = {name: node for node, name in BROKERS.items()}


class FakeCluster:
    """Three brokers and one topic of three partitions (replicas 1,2,3 rotated): a broker that stops
    leaves every ISR and hands its leaderships to the next in-sync replica; one that comes back rejoins
    the ISRs ``rejoin_looks`` metadata reads later. Records the calls in order."""

    def __init__(self, rejoin_looks: int = 2) -> None:
        self.replicas = {p: tuple(1 + (p + i) % 3 for i in range(3)) for p in range(3)}
        self.leader = {p: r[0] for p, r in self.replicas.items()}
        self.down: set[int] = set()
        self.rejoining: dict[int, int] = {}  # node -> metadata reads until it is in sync again
        self.rejoin_looks = rejoin_looks
        self.calls: list[str] = []
        self.held: list[set[int]] = []  # the brokers each metadata read was told faults hold down

    # -- Services ----------------------------------------------------------------------------------

    def _down(self, name: str, verb: str) -> None:
        self.calls.append(f"{verb} {name}")
        node = SERVICE_NODE[name]
        self.down.add(node)
        for p, leader in self.leader.items():
            if leader == node:
                self.leader[p] = next((n for n in self.replicas[p] if n not in self.down), -1)

    def kill(self, name: str) -> None:
        self._down(name, "kill")

    def stop(self, name: str, timeout: float = 0.0) -> None:
        self._down(name, "stop")

    def pause(self, name: str) -> None:
        self._down(name, "pause")

    def revive(self, name: str) -> object:
        self.calls.append(f"revive {name}")
        node = SERVICE_NODE[name]
        self.down.discard(node)
        self.rejoining[node] = self.rejoin_looks
        return None

    def launch(self, name: str) -> None:  # started again, not waited for
        self.revive(name)
        self.calls[-1] = f"launch {name}"

    def wait_healthy(self, name: str, timeout: float) -> object:
        self.calls.append(f"healthy {name}")
        return None

    def resume(self, name: str) -> None:
        self.calls.append(f"resume {name}")
        node = SERVICE_NODE[name]
        self.down.discard(node)
        self.rejoining[node] = self.rejoin_looks

    # -- Leadership --------------------------------------------------------------------------------

    async def partitions(self, held: Collection[int] = ()) -> dict[str, PartitionState]:
        self.calls.append("metadata")
        self.held.append(set(held))
        out_of_sync = self.down | {n for n, looks in self.rejoining.items() if looks > 0}
        self.rejoining = {n: looks - 1 for n, looks in self.rejoining.items() if looks > 0}
        return {
            f"{TOPIC}/{p}": PartitionState(self.leader[p], tuple(sorted(n for n in r if n not in out_of_sync)), r)
            for p, r in self.replicas.items()
        }

    async def close(self) -> None:
        self.calls.append("close")


def run_faults(cluster: FakeCluster, *steps: FaultStep) -> FaultRunner:
    runner = FaultRunner(steps, Targets(cluster, brokers=BROKERS, leadership=cluster), Clock(), lambda _: None)

    async def go() -> None:
        try:
            await runner.run()
        finally:
            await runner.undo_all()

    asyncio.run(go())
    return runner


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "IN_SYNC_POLL", 0.001)


def test_the_leader_is_the_broker_leading_the_partition_when_the_fault_is_applied() -> None:
    cluster = FakeCluster()
    cluster.leader[0] = 3  # leadership moved since the config was written: the fault follows it
    [window] = run_faults(cluster, FaultStep(at=0, target=f"leader:{TOPIC}/0", action="kill", duration=0.01)).windows
    assert window.services == ("kafka3",)
    assert cluster.calls[:2] == ["metadata", "kill kafka3"]
    # on a cluster the broker is started again and the fault is over; it is waited for after
    assert cluster.calls.index("launch kafka3") < cluster.calls.index("healthy kafka3")
    before, during, after = (window.partitions[m][f"{TOPIC}/0"] for m in ("before", "during", "after"))
    assert before.leader == 3 and before.isr == (1, 2, 3)
    assert during.leader != 3 and 3 not in during.isr  # leadership moved away while it was down
    assert set(after.isr) == set(after.replicas)  # the window ends once every replica is in sync again
    assert window.brokers == BROKERS and not math.isnan(window.end)


@pytest.mark.parametrize(("target", "acted"), [("follower", ("kafka2",)), ("followers", ("kafka2", "kafka3"))])
def test_followers_are_the_other_replicas(target: str, acted: tuple[str, ...]) -> None:
    cluster = FakeCluster()
    step = FaultStep(at=0, target=f"{target}:{TOPIC}/0", action="pause", duration=0.01)
    [window] = run_faults(cluster, step).windows
    assert window.services == acted
    assert [c for c in cluster.calls if c != "metadata"][: len(acted)] == [f"pause {s}" for s in acted]
    assert {f"resume {s}" for s in acted} <= set(cluster.calls)
    during = window.partitions["during"][f"{TOPIC}/0"]
    assert during.leader == 1 and during.isr == tuple(sorted(set((1, 2, 3)) - {SERVICE_NODE[s] for s in acted}))


def test_a_leader_killed_while_its_followers_are_paused_is_found_without_asking_them() -> None:
    cluster = FakeCluster()
    steps = (
        FaultStep(at=0, target=f"followers:{TOPIC}/0", action="pause", duration=0.2),
        FaultStep(at=0.1, target=f"leader:{TOPIC}/0", action="kill", duration=0.05),
    )
    pause, kill = run_faults(cluster, *steps).windows
    assert pause.services == ("kafka2", "kafka3") and kill.services == ("kafka",)
    assert cluster.held[1] == {2, 3}  # resolving the leader: the paused followers asked last
    assert cluster.calls.index("kill kafka") < cluster.calls.index("resume kafka2")


def test_a_fault_on_a_broker_named_as_a_service_records_leadership_too() -> None:
    cluster = FakeCluster()
    [window] = run_faults(cluster, FaultStep(at=0, target="kafka2", action="stop", duration=0.01)).windows
    assert set(window.partitions) == {"before", "during", "after"}
    assert window.partitions["during"][f"{TOPIC}/1"].leader != 2


def test_a_partition_without_a_leader_cannot_be_targeted() -> None:
    cluster = FakeCluster()
    cluster.leader[2] = -1
    with pytest.raises(StackError, match="no leader among"):
        run_faults(cluster, FaultStep(at=0, target=f"leader:{TOPIC}/2", action="kill", duration=0.01))
    with pytest.raises(StackError, match="is not a partition"):
        run_faults(cluster, FaultStep(at=0, target=f"leader:{TOPIC}/9", action="kill", duration=0.01))


def test_a_rolling_restart_waits_for_every_replica_in_sync_before_the_next_broker() -> None:
    cluster = FakeCluster(rejoin_looks=3)
    [window] = run_faults(cluster, FaultStep(at=0, target="brokers", action="rolling-restart")).windows
    actions = [c for c in cluster.calls if c not in ("metadata", "close")]
    assert actions == [
        "stop kafka", "revive kafka", "stop kafka2", "revive kafka2", "stop kafka3", "launch kafka3", "healthy kafka3"
    ]  # fmt: skip
    # between a revive and the next stop, metadata was read until the revived broker was in sync again
    for name in ("kafka", "kafka2"):
        between = cluster.calls[cluster.calls.index(f"revive {name}") + 1 :]
        assert between.index("metadata") < between.index(next(c for c in between if c.startswith("stop")))
        assert between[: cluster.rejoin_looks + 1] == ["metadata"] * (cluster.rejoin_looks + 1)
    assert window.services == ("kafka", "kafka2", "kafka3")
    assert window.partitions["during"][f"{TOPIC}/0"].leader != 1  # node 1 was down then
    assert all(set(s.isr) == set(s.replicas) for s in window.partitions["after"].values())
    assert window.output.count("in sync after") == 3


def test_a_rolling_restart_interrupted_revives_the_broker_it_stopped() -> None:
    cluster = FakeCluster()
    runner = FaultRunner(
        (FaultStep(at=0, target="brokers", action="rolling-restart"),),
        Targets(cluster, brokers=BROKERS, leadership=cluster),
        Clock(),
        lambda _: None,
    )
    slow_revive = cluster.revive

    def never_back(name: str) -> object:  # the run ends (Ctrl-C) while the first broker is down
        raise asyncio.CancelledError

    async def go() -> None:
        cluster.revive = never_back  # type: ignore[method-assign]
        task = asyncio.create_task(runner.run())
        await asyncio.gather(task, return_exceptions=True)
        cluster.revive = slow_revive  # type: ignore[method-assign]
        await runner.undo_all()

    asyncio.run(go())
    assert cluster.calls.count("stop kafka") == 1 and "revive kafka" in cluster.calls
    assert "stop kafka2" not in cluster.calls


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("leader:market.trades.raw/0", BrokerTarget("leader", TOPIC, 0)),
        ("followers:t_1-x/12", BrokerTarget("followers", "t_1-x", 12)),
        ("kafka2", None),
        ("consumer-kafka", None),
    ],
)
def test_broker_targets_parse(target: str, parsed: BrokerTarget | None) -> None:
    assert broker_target(target) == parsed


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ({"target": "leader:market.trades.raw", "action": "kill", "duration": 1}, "leader:TOPIC/PARTITION"),
        ({"target": "leader:t/0", "action": "cut", "duration": 1}, "a broker target takes a service action"),
        ({"target": "kafka", "action": "rolling-restart"}, 'takes target = "brokers"'),
        ({"target": "brokers", "action": "rolling-restart", "duration": 5}, "and no `duration`"),
    ],
)
def test_bad_broker_faults_are_refused(fault: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        FaultStep.model_validate({"at": 0, **fault})


def test_broker_faults_need_a_stack_with_brokers() -> None:
    step = FaultStep(at=0, target="leader:t/0", action="kill", duration=1)
    Owned(services=("kafka",), brokers=("kafka",)).check((step,), "scenarios.x.faults")
    with pytest.raises(ConfigError, match="the \\[faults\\] stack has none"):
        Owned(services=("api",)).check((step,), "scenarios.x.faults")


CLUSTER_CONFIG = """
[source]
type = "websocket"
port = 1
[stages.api]
base_url = "http://127.0.0.1:1"
query = "/v1/trades?symbol={{symbol}}&start_time={{start_ms}}&end_time={{end_ms}}"
records = "data"
tag_field = "trade_id"
time_field = "trade_time"
[faults]
stack = "%s"
%s
[scenarios.leader-kill]
faults = [{ at = "1s", target = "leader:market.trades.raw/0", action = "kill", duration = "10s" }]
"""


def test_broker_faults_need_to_know_where_the_cluster_is(tmp_path: Path) -> None:
    stack = Path(__file__).parents[2] / "compose" / "profiles" / "cluster.toml"
    path = tmp_path / "pipeline.toml"
    path.write_text(CLUSTER_CONFIG.replace("{{", "{").replace("}}", "}") % (stack, ""))
    with pytest.raises(ConfigError, match="no Kafka stage or \\[faults\\] bootstrap"):
        load_config(path, {})
    path.write_text(CLUSTER_CONFIG.replace("{{", "{").replace("}}", "}") % (stack, 'bootstrap = "127.0.0.1:1"'))
    assert load_config(path, {}).kafka_cluster() == ("127.0.0.1:1", "faults.bootstrap", ())


def test_metadata_answers_become_leadership() -> None:
    answer = {
        "topics": [
            {
                "error_code": 0,
                "topic": TOPIC,
                "partitions": [
                    {"error_code": 0, "partition": 10, "leader": 2, "replicas": [2, 3, 1], "isr": [3, 2]},
                    {"error_code": 5, "partition": 2, "leader": -1, "replicas": [1, 2, 3], "isr": []},
                ],
            }
        ]
    }
    assert parse_metadata(answer) == {
        f"{TOPIC}/2": PartitionState(-1, (), (1, 2, 3)),
        f"{TOPIC}/10": PartitionState(2, (2, 3), (2, 3, 1)),
    }
    with pytest.raises(Exception, match="metadata of topic 'gone'"):
        parse_metadata({"topics": [{"error_code": 3, "topic": "gone", "partitions": []}]})


def test_during_is_what_the_fault_made_and_it_still_holds_its_whole_duration() -> None:
    cluster = FakeCluster()
    [window] = run_faults(cluster, FaultStep(at=0, target=f"leader:{TOPIC}/0", action="kill", duration=0.3)).windows
    assert window.partitions["during"][f"{TOPIC}/0"].leader != 1
    assert window.end - window.start >= 0.3  # seen early, undone on time


def test_a_run_that_ends_does_not_wait_for_replicas_to_catch_up() -> None:
    cluster = FakeCluster(rejoin_looks=10_000)  # never back in sync
    step = FaultStep(at=0, target="kafka3", action="kill", duration=60)
    runner = FaultRunner((step,), Targets(cluster, brokers=BROKERS, leadership=cluster), Clock(), lambda _: None)

    async def go() -> None:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.05)
        task.cancel()  # Ctrl-C while the broker is down
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(runner.undo_all(), 5)  # one look at the leadership, not IN_SYNC_TIMEOUT

    asyncio.run(go())
    [window] = runner.windows
    assert "launch kafka3" in cluster.calls and "healthy kafka3" not in cluster.calls
    assert 3 not in window.partitions["after"][f"{TOPIC}/0"].isr


def test_a_lone_broker_is_waited_for_until_it_answers() -> None:
    cluster = FakeCluster()
    step = FaultStep(at=0, target="kafka", action="kill", duration=0.01)
    runner = FaultRunner((step,), Targets(cluster, brokers={1: "kafka"}, leadership=cluster), Clock(), lambda _: None)

    async def go() -> None:
        await runner.run()
        await runner.undo_all()

    asyncio.run(go())
    assert "revive kafka" in cluster.calls and not any(c.startswith("launch") for c in cluster.calls)
