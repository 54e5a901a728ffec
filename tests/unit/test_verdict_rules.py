"""The verdict rules a canary row's whole life is judged by, each on the real engine with the in-memory
stages: every version compared, every gap counted, latencies only where they were measured, nothing judged
never passed, one throughput figure against what was injected, resolution, ordering per source partition,
drains as long as the bound judged, per-stage thresholds and what each rate is out of."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.runs.driver import Outcome, run
from pipeline_check.verdict.status import Status
from tests.support import memory

BASE = """
[source]
type = "memory"

{stages}

[load]
count = {count}
rate = {rate}
settle = "{settle}"
drain_timeout = "{drain}"

[sla]
thresholds = {thresholds}
"""


FIELDS = '{ price = "p:decimal" }'


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()


def config(
    tmp_path: Path,
    thresholds: list[str],
    *,
    kafka: str = "",
    iceberg: str = "",
    api: str = "",
    count: int = 100,
    rate: float = 250,
    settle: str = "0s",
    drain: str = "1s",
) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    stages = ""
    for name, delay, extra in (("kafka", 0.005, kafka), ("iceberg", 0.01, iceberg), ("api", 0.02, api)):
        given = dict(line.split(" = ", 1) for line in extra.splitlines() if line)
        settings = {"delay": str(delay)} | ({} if name == "kafka" else {"fields": FIELDS}) | given
        stages += f'[stages.{name}]\ntype = "memory"\n' + "".join(f"{k} = {v}\n" for k, v in settings.items())
    text = BASE.format(
        stages=stages, count=count, rate=rate, settle=settle, drain=drain,
        thresholds="[" + ", ".join(f'"{t}"' for t in thresholds) + "]",
    )  # fmt: skip
    path.write_text(text)
    return load_config(path, {})


def statuses(outcome: Outcome) -> dict[str, Status]:
    return {r.threshold: r.status for r in outcome.finished.results}


# -- 1: every version of a row is compared ------------------------------------------------------------


def test_a_row_changed_after_it_was_first_seen_is_corrupted(tmp_path: Path) -> None:
    outcome = run(config(tmp_path, ["corrupted == 0", "corrupted.iceberg == 0"], api="rewrite = [5, 6]", settle="0.2s"))
    assert statuses(outcome) == {"corrupted == 0": Status.FAILED, "corrupted.iceberg == 0": Status.PASSED}
    diffs = outcome.finished.summary.diffs
    assert {(d.stage, d.field) for d in diffs} == {("api", "price")}
    changed = diffs[0]
    assert changed.previous == changed.expected  # it matched what was sent until it changed
    assert changed.changed_after_s is not None and changed.changed_after_s >= 0.05
    assert "changed from" in changed.text and "after it was first seen" in changed.text
    assert outcome.finished.summary.stage["api"].corrupted == 2


# -- 2: any interval a seen row was gone is a retraction ----------------------------------------------


def test_a_row_deleted_and_restored_is_retracted(tmp_path: Path) -> None:
    api = "retract = [3, 4]\nretract_after = 0.02\nrestore_after = 0.05"
    outcome = run(config(tmp_path, ["retracted == 0", "retracted.iceberg == 0"], api=api, settle="0.3s"))
    assert statuses(outcome) == {"retracted == 0": Status.FAILED, "retracted.iceberg == 0": Status.PASSED}
    summary = outcome.finished.summary
    assert summary.stage["api"].retracted == 2 and summary.stage["api"].restored == 2
    assert all(re.fullmatch(r"retracted, restored after 0\.\d+s", r.text) for r in summary.retractions)
    assert "(2 restored)" in outcome.result("retracted == 0").detail


# -- 4: latencies only from sightings made while watching; a moved time is corrupted -----------------


def test_a_canary_found_only_by_the_last_look_has_no_latency(tmp_path: Path) -> None:
    late = ", ".join(str(s) for s in range(0, 100, 20))  # 5 of 100 found by the final sweep
    # the run waits out the bound (1 s) for them, then its last look finds them
    cfg = config(tmp_path, ["e2e.p99 < 1s", "e2e.p50 < 1s", "lost == 0"], api=f"late = [{late}]", drain="0.5s")
    outcome = run(cfg)
    s = statuses(outcome)
    assert s["lost == 0"] == Status.PASSED  # found: not lost
    assert s["e2e.p50 < 1s"] == Status.PASSED  # even with the 5 at "never", the median holds
    assert s["e2e.p99 < 1s"] == Status.INCONCLUSIVE  # the p99 is one of them: between ~0 and never
    assert "5 found only by a last look have no measured latency" in outcome.result("e2e.p99 < 1s").detail
    e2e = outcome.finished.summary.e2e
    assert e2e["unmeasured"] == 5 and e2e["max"] < 0.5  # never the drain (1 s), never the sweep's time


def test_a_canary_whose_time_moved_is_corrupted_naming_the_time_field(tmp_path: Path) -> None:
    # no `fields` names the time: the probe's placement alone finds it moved
    cfg = config(tmp_path, ["corrupted == 0"], api='moved = [7]\nfields = { symbol = "s" }')
    outcome = run(cfg)
    assert statuses(outcome) == {"corrupted == 0": Status.FAILED}
    (diff,) = outcome.finished.summary.diffs
    assert (diff.stage, diff.field) == ("api", "trade_time") and "send time" in diff.expected
    assert outcome.finished.summary.e2e["unmeasured"] == 1  # looked for at its send time, found elsewhere


# -- 5: nothing judged is nothing passed ---------------------------------------------------------------


def test_a_run_that_delivered_nothing_never_passes(tmp_path: Path) -> None:
    drop = ", ".join(str(s) for s in range(20))
    cfg = config(tmp_path, ["duplicates == 0", "duplicate_rate == 0%", "corrupted == 0"], api=f"drop = [{drop}]",
                 count=20, drain="0.2s")  # fmt: skip
    outcome = run(cfg)
    s = statuses(outcome)
    assert s["delivered > 0"] == Status.FAILED  # whatever the thresholds
    assert s["duplicate_rate == 0%"] == Status.INCONCLUSIVE  # 20 seen at kafka, none duplicated: 0 of 20 proves little
    assert outcome.finished.verdict == Status.FAILED and outcome.exit_code == ExitCode.VERDICT_FAILED


def test_a_delivery_check_asked_for_is_judged_once(tmp_path: Path) -> None:
    drop = ", ".join(str(s) for s in range(20))
    outcome = run(config(tmp_path, ["delivered > 0"], api=f"drop = [{drop}]", count=20, drain="0.2s"))
    assert [(r.threshold, r.status) for r in outcome.finished.results] == [("delivered > 0", Status.FAILED)]


def test_a_count_over_no_canary_is_inconclusive(tmp_path: Path) -> None:
    drop = ", ".join(str(s) for s in range(20))
    cfg = config(tmp_path, ["corrupted.api == 0", "duplicates.api == 0", "lost == 0"], api=f"drop = [{drop}]",
                 count=20, drain="0.2s")  # fmt: skip
    s = statuses(run(cfg))
    assert s["corrupted.api == 0"] == Status.INCONCLUSIVE  # the api compared nothing: it showed nothing
    assert s["duplicates.api == 0"] == Status.INCONCLUSIVE  # none seen there to be duplicated


def test_allow_inconclusive_never_opens_the_gate_when_no_check_passed(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["e2e.p99 < 30s", "loss_rate < 0.1%"], count=20)
    outcome = run(cfg, allow_inconclusive=True)
    assert set(statuses(outcome).values()) == {Status.INCONCLUSIVE}
    assert outcome.exit_code == ExitCode.VERDICT_FAILED
    mixed = run(config(tmp_path, ["e2e.max < 30s", "loss_rate < 0.1%"], count=20), allow_inconclusive=True)
    assert mixed.exit_code == ExitCode.OK  # one passed: what was proven holds, the rest is allowed open


# -- 6, 16: throughput against what the injector achieved, one figure everywhere -----------------------


def test_throughput_is_judged_against_every_canary_sent(tmp_path: Path) -> None:
    drop = ", ".join(str(s) for s in range(300) if s % 5)  # 4 of 5 never arrive
    cfg = config(tmp_path, ["throughput >= 90%"], api=f"drop = [{drop}]", count=300, rate=100, drain="0.5s")
    outcome = run(cfg)
    check = outcome.result("throughput >= 90%")
    assert check.status == Status.FAILED, check.detail
    figures = outcome.finished.summary.throughput
    assert figures.injected_rate == pytest.approx(outcome.finished.summary.injection.achieved_rate)
    assert 15 < figures.delivered < 25 and check.observed == figures.delivered  # one figure
    assert "(all 300 canaries sent)" in check.detail and "60 of 300 canaries delivered" in check.detail


def test_an_absolute_floor_above_the_configured_rate_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^load\.rate=10\.0 .*below the 'throughput >= 100/s' floor"):
        config(tmp_path, ["throughput >= 100/s"], rate=10)
    cfg = config(tmp_path, ["throughput >= 10/s"], rate=10)
    with pytest.raises(ConfigError, match=r"^--rate=5\.0 .*'throughput >= 10/s' floor"):
        cfg.with_overrides(None, rate=5)


# -- 7: a bound finer than the probes can tell ---------------------------------------------------------


def test_a_stage_bound_finer_than_its_probes_is_inconclusive_and_no_latency_is_negative(tmp_path: Path) -> None:
    # the iceberg probe looks every 0.5 s; the api, reading the table, sees canaries 0.1 s after they land
    cfg = config(
        tmp_path, ["stage.api.p50 < 300ms", "stage.api.min < 300ms", "e2e.p99 < 30s"],
        iceberg="look_every = 0.5\ndelay = 0.01", api="delay = 0.1", count=100, rate=100,
    )  # fmt: skip
    outcome = run(cfg)
    check = outcome.result("stage.api.p50 < 300ms")
    assert check.status == Status.INCONCLUSIVE and "known to ±0.5" in check.detail, check.detail
    assert outcome.result("e2e.p99 < 30s").status == Status.PASSED
    api = outcome.finished.summary.stage["api"]
    assert api.latency["max"] >= 0 and min(outcome.book.hop_latencies("api")) >= 0
    assert api.resolution_s == pytest.approx(0.5, abs=0.1)


def test_a_latency_over_a_fine_bound_by_more_than_the_resolution_fails(tmp_path: Path) -> None:
    # the api shows canaries 2 s after they were sent, 1.5 s or more after the table (seen to ±0.5 s): over
    # 300 ms whatever the probes missed
    cfg = config(
        tmp_path, ["stage.api.p50 < 300ms"],
        iceberg="look_every = 0.5\ndelay = 0.01", api="delay = 2.0", count=100, rate=100, drain="4s",
    )  # fmt: skip
    check = run(cfg).result("stage.api.p50 < 300ms")
    assert check.status == Status.FAILED and "±0.5" in check.detail, check.detail


# -- 8, 9: ordering at every ordered stage, per source partition ---------------------------------------


def test_ordering_is_judged_at_every_stage_that_declares_one(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, ["out_of_order == 0", "out_of_order.iceberg == 0"],
        kafka="shards = 3", iceberg="partitions = 3", api="partitions = 3\nswap = [30, 33]",
    )  # fmt: skip
    outcome = run(cfg)
    assert statuses(outcome) == {"out_of_order == 0": Status.FAILED, "out_of_order.iceberg == 0": Status.PASSED}
    summary = outcome.finished.summary
    assert summary.order_stages == ["iceberg", "api"]
    assert (summary.stage["iceberg"].out_of_order, summary.stage["api"].out_of_order) == (0, 1)


def test_offsets_of_different_partitions_are_never_compared(tmp_path: Path) -> None:
    # the iceberg column holds each canary's Kafka offset; partitions' offsets start far apart
    cfg = config(tmp_path, ["out_of_order == 0"], kafka="shards = 3", iceberg="partitions = 3")
    outcome = run(cfg)
    assert statuses(outcome) == {"out_of_order == 0": Status.PASSED}, outcome.result("out_of_order == 0").detail
    assert "placed at an ordered stage" in outcome.result("out_of_order == 0").detail


# -- 11: the drain covers the bound judged --------------------------------------------------------------


def test_a_drain_shorter_than_the_e2e_bound_loses_no_canary_that_met_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["lost == 0", "e2e.max < 5s"], api="delay = 0.8", count=20, drain="0.1s")
    outcome = run(cfg)
    assert statuses(outcome) == {"lost == 0": Status.PASSED, "e2e.max < 5s": Status.PASSED}


# -- 12, 14: per-stage thresholds; every count out of its own canaries ---------------------------------


def test_per_stage_counts_and_what_each_is_out_of(tmp_path: Path) -> None:
    everything = ", ".join(str(s) for s in range(100))
    keep = ", ".join(str(s) for s in range(100) if s >= 10)
    cfg = config(
        tmp_path, ["duplicates == 0", "duplicates.api == 0", "duplicate_rate <= 100%", "lost.iceberg == 0"],
        kafka=f"duplicate = [{everything}]", api=f"drop = [{keep}]", drain="0.2s",
    )  # fmt: skip
    outcome = run(cfg)
    s = statuses(outcome)
    assert s["duplicates.api == 0"] == Status.PASSED  # the raw topic's retries are not the API's
    assert s["duplicates == 0"] == Status.FAILED and s["lost.iceberg == 0"] == Status.PASSED
    whole = outcome.result("duplicates == 0")
    assert whole.detail.startswith("100 duplicated of 100 seen at a stage")  # never "100 of 10"
    rate = outcome.result("duplicate_rate <= 100%")
    assert rate.observed == 100.0 and s["duplicate_rate <= 100%"] == Status.PASSED
    api = outcome.result("duplicates.api == 0")
    assert api.detail.startswith("0 duplicated of 10 seen at api")


def test_a_per_stage_threshold_names_a_configured_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"duplicates\.warehouse == 0.*unknown stage 'warehouse'"):
        config(tmp_path, ["duplicates.warehouse == 0"])
