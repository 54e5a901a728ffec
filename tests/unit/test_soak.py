"""The soak's own logic (benchmarks/soak.py): the runs it plans, why a run did not pass (a consumer stall
told apart from a fault on the consumer and from a failure not about time), and the summary of the flaky ones."""

from __future__ import annotations

from benchmarks.soak import CLUSTER, PLAIN, cause, plan, summarise


def test_half_the_runs_on_each_stack_every_scenario_in_turn() -> None:
    runs = plan(50)
    assert len(runs) == 50 and runs[:2] == [("plain", "smoke"), ("plain", "freshness")]
    assert sum(1 for s, _ in runs if s == "plain") == 25
    assert {n for s, n in runs if s == "plain"} == set(PLAIN) and {n for s, n in runs if s == "cluster"} == set(CLUSTER)


def report(slowest: str, stuck: dict[str, list[str]] | None = None) -> dict[str, object]:
    return {
        "verdict": "failed",
        "checks": [
            {"name": "lost == 0", "status": "passed", "observed": 0, "kind": "count"},
            {"name": "e2e.p99 < 30s", "status": "failed", "observed": 41.0, "detail": "p99 of 1000", "kind": "latency"},
        ],
        "stages": [
            {"name": "kafka", "latency": {"p99": 0.2}},
            {"name": slowest, "latency": {"p99": 38.0}},
            {"name": "api", "latency": {"p99": "inf"}},
        ],
        "lost": {"stuck": stuck or {}},
        "notes": [f"note {i}" for i in range(20)],
    }


def test_a_slow_consumer_without_a_fault_on_it_looks_like_the_consumer_stall() -> None:
    why = cause(report("consumer"), faults=["leader:market.trades.raw/0", "kafka2"])
    assert why["consumer_stall"] and why["slowest_hop"] == "consumer"
    assert why["failed"] == [{"check": "e2e.p99 < 30s", "status": "failed", "observed": 41.0, "detail": "p99 of 1000"}]
    assert len(why["notes"]) == 8
    assert cause(report("iceberg", {"kafka": ["r#1"]}), faults=[])["consumer_stall"]  # stuck before the commit
    assert not cause(report("consumer"), faults=["consumer"])["consumer_stall"]  # the fault explains it
    assert not cause(report("iceberg"), faults=[])["consumer_stall"]
    short = report("consumer")  # slowest hop, but nothing late: the background load fell short of the asked
    short["checks"] = [{"name": "throughput >= 90%", "status": "inconclusive", "observed": 99.7, "kind": "rate"}]
    assert not cause(short, faults=[])["consumer_stall"]
    aborted = cause({"verdict": "aborted", "error": "stages.kafka.bootstrap: no answer"}, faults=[])
    assert aborted == {"error": "stages.kafka.bootstrap: no answer", "consumer_stall": False}


def test_the_summary_counts_what_did_not_pass_per_scenario() -> None:
    entries = [
        {"run": 0, "stack": "plain", "scenario": "smoke", "verdict": "passed", "seconds": 12.0},
        {"run": 1, "stack": "plain", "scenario": "smoke", "verdict": "failed", "seconds": 14.0,
         "cause": cause(report("consumer"), faults=[])},
        {"run": 2, "stack": "cluster", "scenario": "leader-kill", "verdict": "passed", "seconds": 50.0},
    ]  # fmt: skip
    summary = summarise(entries)
    assert (summary["runs"], summary["wrong"], summary["consumer_stalls"]) == (3, 1, 1)
    assert summary["flaky"] == {
        "plain:smoke": {"runs": 1, "of": 2, "causes": ["run 1: e2e.p99 < 30s failed (41.0) [consumer stall?]"]}
    }
    assert summary["seconds_per_scenario"] == {"plain:smoke": 13.0, "cluster:leader-kill": 50.0}
