"""Faults on the cluster's brokers (`make test-e2e-cluster`): each shipped scenario of
compose/pipeline.cluster.toml (the leader of a partition killed, stopped or frozen, a rolling restart, a
follower frozen out of the ISRs, the leader killed while its followers lag) loses and duplicates nothing on
the reference pipeline and recovers, with the leadership before, during and after in the run's JSON; the
same lagging-leader kill loses canaries when the ingestor produces with acks=1 (UNSAFE_PRODUCER_ACKS=1); the
validator's own Kafka producer rides through a leader kill too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status
from tests.e2e.cluster import CONFIG, TOPIC, cluster_config, validate

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster]

P0 = f"{TOPIC}/0"
SCENARIOS = ["leader-kill", "leader-stop", "leader-pause", "rolling-restart", "isr-shrink", "leader-kill-lagging"]


def node_of(fault: dict[str, Any], service: str) -> int:
    return next(int(node) for node, name in fault["brokers"].items() if name == service)


def leadership(fault: dict[str, Any]) -> str:
    def moment(states: dict[str, Any]) -> str:
        return ", ".join(f"{k}: {s['leader']} isr {s['isr']}" for k, s in states.items()) or "unknown"

    return "; ".join(f"{m} {moment(states)}" for m, states in fault["partitions"].items())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_reference_pipeline_rides_through_a_leader_fault(
    scenario: str, cluster_up: LocalStack, tmp_path: Path
) -> None:
    outcome, report, notes = validate(cluster_up, scenario, tmp_path / "report.json")
    faults = report["faults"]
    for fault in faults:
        span = f"from {fault['start_s']:.1f}s to {fault['end_s']:.1f}s"
        print(f"{scenario}: {fault['label']} on {fault['services']} {span}")
        print(f"  {leadership(fault)}")
    recovery = outcome.result("recovery < 60s")
    print(f"{scenario}: recovered in {recovery.observed_text}; lost {report['lost']['count']}")
    outcome.check()  # lost, duplicates, corrupted, incomplete == 0; recovery; freshness before and after
    assert outcome.finished.verdict is Status.PASSED

    last = faults[-1]
    before, during, after = (last["partitions"][m] for m in ("before", "during", "after"))
    assert all(set(s["isr"]) == set(s["replicas"]) for s in after.values()), leadership(last)  # whole again
    if scenario in ("leader-kill", "leader-stop", "leader-pause", "leader-kill-lagging"):
        [victim] = last["services"]
        assert before[P0]["leader"] == node_of(last, victim)  # the target was the leader when applied
        assert during[P0]["leader"] not in (node_of(last, victim), -1), leadership(last)  # and leadership moved
    elif scenario == "isr-shrink":
        [follower] = last["services"]
        node = node_of(last, follower)
        assert node in before[P0]["isr"] and before[P0]["leader"] != node
        # it left the ISRs by lag (each leader drops it on its own check, not every one by the last look)
        assert any(node not in s["isr"] for s in during.values()), leadership(last)
        assert during[P0]["leader"] == before[P0]["leader"], leadership(last)
    else:  # rolling restart: every broker, one after the other, each back in sync before the next
        assert last["services"] == ["kafka", "kafka2", "kafka3"]
        assert last["output"].count("in sync after") == 3, last["output"]
        first = node_of(last, "kafka")  # down first: a controlled shutdown handed its leaderships over
        assert all(s["leader"] != first for s in during.values()), leadership(last)
    assert not any("leadership unknown" in n for n in notes.lines if "pause followers" not in n), notes.lines


def test_the_kafka_injector_rides_through_a_leader_kill(cluster_up: LocalStack, tmp_path: Path) -> None:
    """pipeline-check's own producer (source type kafka: idempotent, acks=all, its own batches) writes the
    canaries straight to the raw topic while the leader of partition 0 is killed: its retries land every
    canary once, on the new leader."""
    text = CONFIG.read_text()
    start, end = text.index("[source]\n"), text.index("\n[messages]")
    config = cluster_config(cluster_up, f'{text[:start]}[source]\ntype = "kafka"\n{text[end:]}', tmp_path)
    outcome, report, _ = validate(cluster_up, "leader-kill", tmp_path / "report.json", config)
    [fault] = report["faults"]
    print(f"kafka source: {fault['label']} on {fault['services']}; {leadership(fault)}")
    outcome.check()
    assert report["run"]["source"] == "kafka" and report["lost"]["count"] == 0 and report["duplicates"] == 0
    assert fault["partitions"]["during"][P0]["leader"] != node_of(fault, fault["services"][0])


def test_an_acks_1_producer_loses_what_a_dying_leader_acknowledged(cluster_up: LocalStack, tmp_path: Path) -> None:
    """The lagging-leader kill with the ingestor at acks=1: every canary the leader of partition 0
    acknowledged while its followers were frozen is gone (no follower had it, the new leader never will).
    Deterministic: the followers are frozen 5.5 s from 6 s (short of the 6 s ISR lag, so they stay
    eligible), the leader killed at 8.5 s, 3 s before they wake; at 25 canaries/s a third of them ride
    partition 0, so about 20 are acknowledged by the leader alone and lost. Only a pause of the whole
    machine of more than 3 s between the two faults would let the followers catch up first."""
    cluster_up.ensure("ingestor", {"UNSAFE_PRODUCER_ACKS": "1"})
    # lost canaries never arrive: a short drain; the faults end about 35 s in
    outcome, report, _ = validate(cluster_up, "leader-kill-lagging", tmp_path / "report.json", drain_timeout="20s")
    lost = outcome.result("lost == 0")
    print(f"acks=1: {lost.detail}")
    for fault in report["faults"]:
        print(f"  {fault['label']} on {fault['services']} from {fault['start_s']:.1f}s to {fault['end_s']:.1f}s")
        print(f"    {leadership(fault)}")
    assert lost.status is Status.FAILED and lost.observed is not None and lost.observed > 0, lost.detail
    assert outcome.exit_code == 1
    # every lost canary was sent while the followers lagged: between the freeze and the kill, on partition 0
    pause, kill = report["faults"]
    stuck = report["lost"]["stuck"]
    assert list(stuck) == ["source"], stuck  # never in the topic: not even the kafka probe saw them
    rate = report["injection"]["offered_rate"]
    for label in stuck["source"]:
        sent_at = int(label.rsplit("#", 1)[1]) / rate  # canary n goes n / rate seconds after the first
        assert pause["start_s"] - 0.5 <= sent_at <= kill["start_s"] + 0.5, (label, pause["start_s"], kill["start_s"])
