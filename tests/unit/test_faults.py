"""Faults as scenario steps on the in-memory plugins: schedules, windows, undo on every ending, the
targets a config owns, per-window latency and recovery."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import load_config
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError
from pipeline_check.faults.runner import FaultRunner, Targets
from pipeline_check.faults.steps import FaultStep
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.runs.driver import run
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.measurements import recovery
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import FaultWindow
from pipeline_check.verdict.thresholds import parse_threshold
from tests.support import memory
from tests.unit.conftest import route_of

BASE = """
[source]
type = "memory"
{source}

[stages.api]
type = "memory"
delay = 0.02

[load]
count = 200
rate = 100
settle = 0
drain_timeout = "2s"

[scenarios.probe]
inherit_thresholds = false
thresholds = ["lost == 0", "e2e.p95[before] < 1s", "e2e.p95[during] < 1s", "e2e.p95[after] < 1s", "recovery < 1s"]
faults = [{fault}]
{extra}
"""
FAULT = (
    '{{ at = "0.5s", target = "marker", action = "command", command = "touch {flag}", undo = "rm {flag}", '
    'duration = "0.5s" }}'
)


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()


def config_file(tmp_path: Path, source: str = "", extra: str = "", fault: str = FAULT) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(BASE.format(source=source, extra=extra, fault=fault.format(flag=tmp_path / "flag")))
    return path


def test_a_command_fault_holds_for_its_window_and_is_undone(tmp_path: Path) -> None:
    report = tmp_path / "v.json"
    outcome = run(load_config(config_file(tmp_path), {}), "probe", handlers=[JsonReporter(report)])
    assert not (tmp_path / "flag").exists()  # undone
    [fault] = outcome.finished.summary.faults
    assert (fault.action, fault.target, fault.label) == ("command", "marker", "command marker")
    assert 0.45 < fault.start_s < 0.8 and 0.45 < fault.end_s - fault.start_s < 1.0, fault
    assert f"$ touch {tmp_path / 'flag'}" in fault.output and f"$ rm {tmp_path / 'flag'}" in fault.output
    statuses = {r.threshold: r.status for r in outcome.finished.results}
    assert set(statuses.values()) == {Status.PASSED}, outcome.finished.results
    samples = {r.threshold: r.samples for r in outcome.finished.results}
    assert samples["e2e.p95[before] < 1s"] + samples["e2e.p95[during] < 1s"] + samples["e2e.p95[after] < 1s"] == 200
    doc = json.loads(report.read_text())
    assert doc["faults"][0]["label"] == "command marker" and set(doc["windows"]) == {"before", "during", "after"}


def test_injection_ends_a_while_after_the_last_fault_is_over(tmp_path: Path) -> None:
    extra = 'load = { count = 5000, after_faults = "0.6s" }'  # at 100/s: 50 s unless the faults say sooner
    outcome = run(load_config(config_file(tmp_path, extra=extra), {}), "probe")
    [fault] = outcome.finished.summary.faults
    sent = outcome.finished.summary.injection.sent
    # when the book says the last canary went (a busy machine sends fewer than the schedule's 100/s): on past
    # the fault's end, and none from its end + 0.6 s on, instead of 5,000 at 100/s
    sent_at = outcome.book.injected_at[:sent]
    last_sent = sent_at[-1] - sent_at[0]
    assert sent < 5000 and 0.3 <= last_sent - fault.end_s <= 0.61, (sent, last_sent, fault)
    assert outcome.book.injected == sent and outcome.result("recovery < 1s").status is Status.PASSED


def test_faults_are_undone_when_the_run_is_interrupted(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, source="interrupt_after = 80"), {})  # 0.8 s: inside the window
    with pytest.raises(KeyboardInterrupt):
        run(config, "probe")
    assert not (tmp_path / "flag").exists()


def test_windowed_and_recovery_checks_are_not_applicable_without_faults(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path), {})
    rules = ("e2e.p95[during] < 1s", "recovery < 1s", "lost == 0")
    outcome = run(config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": rules})}))
    statuses = {r.threshold: r.status for r in outcome.finished.results}
    assert statuses == {"e2e.p95[during] < 1s": Status.NOT_APPLICABLE, "recovery < 1s": Status.NOT_APPLICABLE,
                        "lost == 0": Status.PASSED}  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (
            '{ at = "1s", target = "consumer", action = "kill", duration = "2s" }',
            "is not a service of the [faults] stack",
        ),
        ('{ at = "1s", target = "x-y", action = "latency", duration = "2s" }', "is not a link"),
        ('{ at = "1s", target = "api", action = "lock", duration = "2s" }', "is not a stage with a SQLite catalog"),
        ('{ at = "1s", target = "consumer", action = "kill" }', "needs a `duration`"),
        ('{ at = "1s", target = "x", action = "command" }', "needs `command`"),
        ('{ at = "1s", target = "x", action = "explode", duration = "1s" }', "action"),
    ],
)
def test_a_fault_on_what_the_config_does_not_own_is_refused(tmp_path: Path, fault: str, problem: str) -> None:
    path = config_file(tmp_path, fault=fault.replace("{", "{{").replace("}", "}}"))
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]").replace("`", "`")):
        load_config(path, {})


class FakeServices:
    """Records what the runner asks of a stack driver (pure logic: the e2e suites drive the real one)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def kill(self, name: str) -> None:
        self.calls.append(f"kill {name}")

    def stop(self, name: str, timeout: float = 0.0) -> None:
        self.calls.append(f"stop {name}")

    def revive(self, name: str) -> object:
        self.calls.append(f"revive {name}")
        return None

    def pause(self, name: str) -> None:
        self.calls.append(f"pause {name}")

    def resume(self, name: str) -> None:
        self.calls.append(f"resume {name}")


def test_stack_actions_and_their_undo_in_order() -> None:
    asyncio.run(stack_actions())


async def stack_actions() -> None:
    services = FakeServices()
    steps = (
        FaultStep(at=0, target="consumer", action="kill", duration=0.05),
        FaultStep(at=0.02, target="api", action="pause", duration=0.01),
        FaultStep(at=0.1, target="kafka", action="restart"),
    )
    runner = FaultRunner(steps, Targets(services=services), Clock(), lambda _: None)
    await runner.run()
    assert services.calls == [
        "kill consumer",
        "pause api",
        "resume api",
        "revive consumer",
        "stop kafka",
        "revive kafka",
    ]
    assert [w.label for w in runner.windows] == ["kill consumer", "pause api", "restart kafka"]
    assert all(w.end >= w.start for w in runner.windows)
    await runner.undo_all()  # nothing left to undo
    assert len(services.calls) == 6


def test_undo_all_undoes_what_still_holds() -> None:
    asyncio.run(cancelled_while_holding())


async def cancelled_while_holding() -> None:
    services = FakeServices()
    step = FaultStep(at=0, target="api", action="stop", duration=60)
    runner = FaultRunner((step,), Targets(services), Clock(), lambda _: None)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    task.cancel()  # the run ends (a verdict, an error, Ctrl-C) while the fault holds
    await runner.undo_all()
    assert services.calls == ["stop api", "revive api"] and not math.isnan(runner.windows[0].end)


def book_with(latency: list[float], sent_every: float = 0.1) -> TraceBook:
    run_id = RunId(77)
    book = TraceBook(
        run_id, TradeFactory(run_id, seed=1, count=len(latency), symbols=("A",)), route_of(("api",)), Clock(0)
    )
    for seq, lat in enumerate(latency):
        book.inject(seq, seq * sent_every)
        if math.isfinite(lat):
            book.seen("api", run_id.tag(seq), seq * sent_every + lat)
    return book


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([0.1] * 10 + [5.0] * 10 + [0.1] * 30, 0.1),  # the fault ends at 1.9 s; the first canary after it is fresh
        ([0.1] * 10 + [5.0] * 15 + [0.1] * 25, 0.6),  # the last stale one was sent at 2.4 s: fresh from 2.5 s
        ([0.1] * 20 + [0.1] * 20 + [5.0] * 10, math.inf),  # stale at the end: never fresh again
        ([0.1] * 20 + [math.inf] * 5 + [0.1] * 25, 0.6),  # lost ones count as stale
    ],
)
def test_recovery_from_the_end_of_a_fault(latencies: list[float], expected: float) -> None:
    book = book_with(latencies)
    window = FaultWindow("kill consumer", "kill", "consumer", 1.0, 1.9)
    found = recovery(book, [window], limit=1.0)
    assert found.inconclusive is None
    assert found.seconds == pytest.approx(expected, abs=1e-6)


def test_a_fault_that_ends_inside_another_is_recovered_from_with_it() -> None:
    book = book_with([0.1] * 10 + [5.0] * 15 + [0.1] * 25)  # stale from 1.0 s to 2.4 s
    pause = FaultWindow("pause followers", "pause", "followers:t/0", 1.0, 1.5)  # ends while the kill holds
    kill = FaultWindow("kill leader", "kill", "leader:t/0", 1.2, 1.9)
    found = recovery(book, [pause, kill], limit=1.0)
    assert found.inconclusive is None and found.seconds == pytest.approx(0.6, abs=1e-6)
    assert "kill leader: 0.6s" in found.detail and "pause followers" not in found.detail


def test_too_few_canaries_after_a_fault_is_inconclusive() -> None:
    book = book_with([0.1] * 15)
    found = recovery(book, [FaultWindow("cut x", "cut", "x", 0.2, 1.0)], limit=1.0)
    assert found.inconclusive is not None and "4 canaries sent after cut x ended" in found.inconclusive
    assert np.isnan(found.seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("lost[during] == 0", "is not a window of 'lost'"), ("e2e.p99[later] < 1s", "[later] is not a window")],
)
def test_windows_belong_to_latencies(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_threshold(text, ("api",))
    assert parse_threshold("stage.api.p99[after] < 2s", ("api",)).window == "after"
