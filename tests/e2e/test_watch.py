"""``pipeline-check watch`` against the local stack: a steady canary whose lost and availability metrics
move, and whose ``/status`` turns to failing, when the consumer stops, and recover once it is back."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_check.core.polling import poll
from pipeline_check.pytest_plugin import PipelineStack
from pipeline_check.stack.local import LocalStack
from tests.support import promtool

pytestmark = [pytest.mark.e2e, pytest.mark.resilience, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# freshness 10 s + grace 5 s: a canary is lost 15 s after injection; the window holds 20 s of canaries
THRESHOLDS = '[sla]\nthresholds = ["e2e.p95 < 10s", "lost == 0"]\n\n'
ARGS = ["--window", "20s", "--grace", "5s", "--listen", "127.0.0.1:0"]
COST_SECONDS = 60.0  # steady state measured over this long


class Watcher:
    """The watch as a child process: its output read on a thread, its endpoints over HTTP."""

    def __init__(self, config: Path, env: dict[str, str], rate: float = 5.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline_check.cli", "watch", "-c", str(config), "--rate", f"{rate:g}", *ARGS],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def drain(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def wait_serving(self, timeout: float) -> None:
        def serving() -> str | None:
            found = re.search(r"serving (http://\S+)/metrics", self.drain())
            return found[1] if found else None

        url = poll(serving, timeout)
        assert url, f"the watch did not serve within {timeout:g}s; output: {self.drain()}"
        self.url = url

    def status(self) -> dict[str, Any]:
        answer = httpx.get(self.url + "/status", timeout=5)
        assert answer.status_code == 200
        return answer.json()  # type: ignore[no-any-return]

    def metrics(self) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return text, samples

    def value(self, name: str, **labels: str) -> float:
        return self.metrics()[1][(name, tuple(sorted(labels.items())))]

    def wait_status(self, what: str, timeout: float, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def matching() -> dict[str, Any] | None:
            doc = self.status()
            return doc if check(doc) else None

        doc = poll(matching, timeout, initial=0.5, cap=1.0)
        assert doc, f"{what}: not within {timeout:g}s; last /status: {self.status()}; output: {self.drain()}"
        return doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def watch_config(tmp_path: Path) -> Path:
    """compose/pipeline.toml with thresholds a test can see fail and recover within a minute."""
    text = (ROOT / "compose" / "pipeline.toml").read_text()
    text, replaced = re.subn(r"\[sla\]\n.*?\n\]\n\n", THRESHOLDS, text, flags=re.S)
    assert replaced == 1, "compose/pipeline.toml has no [sla] thresholds list to replace"
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


@pytest.fixture
def watcher(watch_config: Path, pipeline_stack: PipelineStack) -> Iterator[Watcher]:
    child = Watcher(watch_config, {**pipeline_stack.env(), "PYTHONPATH": str(ROOT)})
    try:
        yield child
    finally:
        child.stop()


def passing(doc: dict[str, Any]) -> bool:
    return doc["verdict"] == "passed" and doc["window"]["canaries"] >= 80 and doc["availability"] == 1.0


def test_watch_sees_a_stopped_consumer_and_its_recovery(
    watcher: Watcher, local_stack: LocalStack, record_property: Any
) -> None:
    watcher.wait_serving(60)
    watcher.wait_status("a passing window before the outage", 120, passing)
    lost_before = watcher.value("pipeline_check_canaries_lost_total", stage_reached="kafka")
    delivered_before = watcher.value("pipeline_check_canaries_delivered_total", stage="api")
    assert delivered_before >= 40

    local_stack.stop("consumer")
    failing = watcher.wait_status(
        "a failing window while the consumer is down",
        90,
        lambda d: d["verdict"] == "failed" and d["lost"]["stuck"].get("kafka", 0) >= 5,
    )
    statuses = {c["threshold"]: c["status"] for c in failing["checks"]}
    assert statuses["lost == 0"] == "failed"
    assert failing["availability"] < 1.0
    assert watcher.value("pipeline_check_canaries_lost_total", stage_reached="kafka") >= lost_before + 5
    assert watcher.value("pipeline_check_availability") < 1.0
    assert watcher.value("pipeline_check_sla_ok", check="lost == 0") == 0.0

    local_stack.start("consumer")
    recovered = watcher.wait_status("a passing window after the consumer restarted", 180, passing)
    assert {c["status"] for c in recovered["checks"]} == {"passed"}
    text, samples = watcher.metrics()
    assert samples[("pipeline_check_availability", ())] == 1.0
    assert samples[("pipeline_check_sla_ok", (("check", "lost == 0"),))] == 1.0
    assert samples[("pipeline_check_canaries_delivered_total", (("stage", "api"),))] > delivered_before
    if promtool.path() is not None:
        checked = promtool.run("check", "metrics", text_input=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    cpu = psutil.Process(watcher.proc.pid).cpu_times()
    record_property("watch_cpu_seconds", round(cpu.user + cpu.system, 2))
    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.proc.wait(timeout=60) == 0, watcher.drain()
    assert "watch stopped" in watcher.drain()


def requests_per_stage(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Requests each stage's probes made so far, every kind but the table's file reads (those follow the
    pipeline's commits, not the probe's pace)."""
    made: dict[str, float] = {}
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name == "pipeline_check_probe_requests_total" and tags["kind"] != "object_gets":
            made[tags["stage"]] = made.get(tags["stage"], 0.0) + value
    return made


def test_a_watch_at_one_canary_a_second_asks_each_stage_at_most_once_a_second(
    watch_config: Path, pipeline_stack: PipelineStack, record_property: Any
) -> None:
    child = Watcher(watch_config, {**pipeline_stack.env(), "PYTHONPATH": str(ROOT)}, rate=1.0)
    try:
        child.wait_serving(60)
        child.wait_status("a passing window", 120, lambda d: d["verdict"] == "passed" and d["window"]["canaries"] >= 5)
        began, (_, before) = time.monotonic(), child.metrics()
        time.sleep(COST_SECONDS)
        seconds, (_, after) = time.monotonic() - began, child.metrics()
        first, last = requests_per_stage(before), requests_per_stage(after)
        rates = {stage: (last[stage] - first.get(stage, 0.0)) / seconds for stage in last}
        gets = sum(
            v - before.get(k, 0.0) for k, v in after.items() if k[0] == "pipeline_check_probe_requests_total" and
            ("kind", "object_gets") in k[1]
        ) / seconds  # fmt: skip
        record_property("requests_per_s", {s: round(r, 2) for s, r in rates.items()})
        record_property("iceberg_object_gets_per_s", round(gets, 2))
        assert set(rates) == {"kafka", "consumer", "iceberg", "api"}, rates
        assert all(0 < rate <= 1.0 for rate in rates.values()), rates
        assert child.status()["verdict"] == "passed"
    finally:
        child.stop()
