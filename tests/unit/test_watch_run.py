"""The watch in-process on the in-memory plugins: metrics in the Prometheus exposition (parsed with
prometheus_client's own parser), the window verdict on ``/status`` failing and recovering, a new run id
per generation with no canary lost across the change, and probes and sources that fail being replaced."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_check.backends.capabilities import PROBES
from pipeline_check.canary.tags import parse
from pipeline_check.config import load_config
from pipeline_check.core.polling import poll
from pipeline_check.runs.plan import Plan
from pipeline_check.runs.watch import Watch, WatchSettings
from tests.support import memory, promtool

T = TypeVar("T")

CONFIG = """
[source]
type = "memory"
pipe = "{pipe}"
{source}

[stages.kafka]
type = "memory"
pipe = "{pipe}"
delay = 0.005
shards = 3

[stages.api]
type = "{api_type}"
pipe = "{pipe}"
delay = {api_delay}
fields = {{ price = "p:decimal" }}
{api}

[sla]
thresholds = {thresholds}
"""
THRESHOLDS = '["e2e.p50 < 1s", "lost == 0", "duplicates == 0", "corrupted == 0", "coverage == 100%"]'


class FlakyProbe(memory.MemoryProbe):
    """A memory probe whose first instance stops on an error after a few looks."""

    failures_left: ClassVar[int] = 1

    async def run(self, stop: asyncio.Event) -> None:
        if FlakyProbe.failures_left:
            FlakyProbe.failures_left -= 1
            await asyncio.sleep(0.2)
            raise RuntimeError("the stage's endpoint went away")
        await super().run(stop)


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    found = poll(check, timeout, initial=0.05)
    assert found, f"{what}: not within {timeout:g}s"
    return found


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()
    PROBES.add("flaky", f"{__name__}:FlakyProbe")


@dataclass
class Running:
    """A watch running on a thread of its own (its server has another), stopped by ``stop``."""

    watch: Watch
    url: str = ""
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None
    error: list[BaseException] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        answer = httpx.get(self.url + "/status", timeout=5)
        assert answer.status_code == 200
        return answer.json()  # type: ignore[no-any-return]

    def verdict_is(self, label: str, canaries: int = 1) -> Callable[[], dict[str, Any] | None]:
        """A check for a window verdict of ``label`` over ``canaries`` or more."""

        def check() -> dict[str, Any] | None:
            doc = self.status()
            return doc if doc["verdict"] == label and doc["window"]["canaries"] >= canaries else None

        return check

    def stop(self) -> None:
        if self.thread is None or self.loop is None or self.stop_event is None:
            return
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the watch did not stop within 30s"
        self.thread = None
        if self.error:
            raise self.error[0]

    def value(self, name: str, **labels: str) -> float:
        """A sample from the exposition of the watch's registry, through prometheus_client's parser."""
        text = generate_latest(self.watch.metrics.registry).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        raise AssertionError(f"no sample {name}{labels} in the exposition")


@pytest.fixture
def start_watch(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(
        *,
        pipe: str,
        source: str = "",
        api: str = "",
        api_type: str = "memory",
        api_delay: float = 0.02,
        thresholds: str = THRESHOLDS,
        **settings: Any,
    ) -> Running:
        path = tmp_path / f"{pipe}.toml"
        text = CONFIG.format(
            pipe=pipe, source=source, api=api, api_type=api_type, api_delay=api_delay, thresholds=thresholds
        )
        path.write_text(text)
        defaults: dict[str, Any] = {"rate": 40.0, "window": 1.0, "grace": 0.2, "evaluate_every": 0.2}
        watch = Watch(Plan.build(load_config(path, {})), WatchSettings(listen="127.0.0.1:0", **(defaults | settings)))
        running = Running(watch)
        listening = threading.Event()

        def on_listening(url: str) -> None:
            running.url = url
            listening.set()

        async def main() -> None:
            running.loop = asyncio.get_running_loop()
            running.stop_event = asyncio.Event()
            await watch.run(running.stop_event, on_listening)

        def body() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                running.error.append(exc)
                listening.set()

        running.thread = threading.Thread(target=body, name=f"watch:{pipe}")
        started.append(running)
        running.thread.start()
        assert listening.wait(10), "the watch did not start serving within 10s"
        assert not running.error, running.error
        return running

    yield start
    for running in started:
        running.stop()


def test_a_slow_batching_pipeline_never_fails_a_window_while_it_fills(start_watch: Callable[..., Running]) -> None:
    """Commits every 0.5 s, a second after sending: 1 to 1.5 s of latency against a 2.5 s loss deadline. Every
    window judges only canaries whose deadline has passed, so none still on its way counts against loss or
    the delivered rate (the window's first verdicts are inconclusive, too short for a rate, never failed)."""
    w = start_watch(
        pipe="slow", api="batch = 0.5", rate=20.0, window=3.0, grace=0.5, evaluate_every=0.2,
        thresholds='["e2e.p50 < 2s", "lost == 0", "throughput >= 90%"]', api_delay=1.0,
    )  # fmt: skip
    verdicts: list[str] = []

    def judged() -> bool:
        doc = w.status()
        if doc["verdict"] != "pending":
            verdicts.append(doc["verdict"])
        return verdicts.count("passed") >= 3

    wait_for(judged, 20, "three passing windows")
    assert "failed" not in verdicts, verdicts


def test_a_healthy_pipeline_passes_and_the_counters_add_up(start_watch: Callable[..., Running]) -> None:
    w = start_watch(pipe="healthy")
    doc = wait_for(w.verdict_is("passed", canaries=30), 15, "a passing window of a full second")
    assert doc["availability"] == 1.0
    assert {c["threshold"]: c["status"] for c in doc["checks"]} == {
        "e2e.p50 < 1s": "passed",
        "lost == 0": "passed",
        "duplicates == 0": "passed",
        "corrupted == 0": "passed",
        "coverage == 100%": "passed",
        "delivered > 0": "passed",  # every window says whether anything was delivered at all
    }
    assert doc["stages"]["kafka"]["reached"] == doc["window"]["canaries"]
    health = httpx.get(w.url + "/healthz", timeout=5)
    assert (health.status_code, health.text) == (200, "ok\n")
    assert httpx.get(w.url + "/nothing", timeout=5).status_code == 404
    scraped = httpx.get(w.url + "/metrics", timeout=5)
    assert scraped.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert {
        "pipeline_check_canaries_injected",
        "pipeline_check_canaries_delivered",
        "pipeline_check_canaries_lost",
        "pipeline_check_canaries_duplicated",
        "pipeline_check_stage_latency_seconds",
        "pipeline_check_e2e_latency_seconds",
        "pipeline_check_sla_ok",
        "pipeline_check_availability",
        "process_resident_memory_bytes",
        "pipeline_check_probe_requests",
        "pipeline_check_probe_bytes",
    } <= names
    assert set(doc["probe_load"]) == {"kafka", "api"} and doc["probe_load"]["api"]["requests"]["requests"] > 0
    w.stop()

    for stage in ("kafka", "api"):  # every generation's probe adds to one counter per stage
        looks = w.value("pipeline_check_probe_requests_total", stage=stage, kind="requests")
        assert looks > 10
        assert w.value("pipeline_check_probe_bytes_total", stage=stage, kind="requests") == looks * memory.LOOK_BYTES

    injected = w.value("pipeline_check_canaries_injected_total")
    in_flight = w.watch.ring.in_flight
    delivered = {s: w.value("pipeline_check_canaries_delivered_total", stage=s) for s in ("kafka", "api")}
    assert injected >= 40
    assert delivered["api"] >= injected - in_flight  # every closed canary was delivered
    assert delivered["kafka"] >= delivered["api"]
    assert w.value("pipeline_check_e2e_latency_seconds_count") == delivered["api"]
    assert w.value("pipeline_check_stage_latency_seconds_count", stage="kafka") == delivered["kafka"]
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="source") == 0
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="kafka") == 0
    assert w.value("pipeline_check_canaries_duplicated_total") == 0
    assert w.value("pipeline_check_availability") == 1.0
    for check in doc["checks"]:
        assert w.value("pipeline_check_sla_ok", check=check["threshold"]) == 1.0


@promtool.needed
def test_promtool_accepts_the_exposition(start_watch: Callable[..., Running]) -> None:
    w = start_watch(pipe="promtool")
    wait_for(w.verdict_is("passed"), 15, "a passing window")
    checked = promtool.run("check", "metrics", text_input=httpx.get(w.url + "/metrics", timeout=5).text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_lost_canaries_fail_the_window_until_it_slides_past_them(start_watch: Callable[..., Running]) -> None:
    dropped = list(range(20, 30))
    w = start_watch(pipe="lossy", api=f"drop = {dropped}", window=2.0)

    def all_lost_in_window() -> dict[str, Any] | None:
        doc = w.status()
        return doc if doc.get("lost", {}).get("count") == len(dropped) else None

    doc = wait_for(all_lost_in_window, 15, "a window holding every lost canary")
    assert doc["verdict"] == "failed"
    statuses = {c["threshold"]: c["status"] for c in doc["checks"]}
    assert statuses["lost == 0"] == "failed"
    assert statuses["e2e.p50 < 1s"] == "passed"
    assert doc["availability"] == (doc["window"]["canaries"] - len(dropped)) / doc["window"]["canaries"]
    assert doc["lost"]["stuck"] == {"kafka": len(dropped)}
    assert w.value("pipeline_check_sla_ok", check="lost == 0") == 0.0
    assert w.value("pipeline_check_availability") < 1.0
    wait_for(w.verdict_is("passed"), 15, "the window passing again once it slid past the lost canaries")
    w.stop()
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="kafka") == len(dropped)
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="source") == 0
    assert w.value("pipeline_check_availability") == 1.0


def test_each_generation_has_a_new_run_id_and_loses_no_canary(start_watch: Callable[..., Running]) -> None:
    w = start_watch(pipe="rotation", generation_seconds=0.25)  # 10 canaries per run id
    wait_for(lambda: w.watch.ring.oldest_open >= 80, 15, "80 canaries closed")
    w.stop()
    tags = [trade.trade_id for _, trade in memory.PIPES["rotation"]]
    assert len(tags) == len(set(tags)), "a tag repeated"
    runs = [parsed[0] for parsed in map(parse, tags) if parsed is not None]
    assert len(runs) == len(tags)
    assert runs == sorted(runs), "run ids go up with time"
    assert len(set(runs)) >= 8
    assert all(runs.count(run) <= 10 for run in set(runs))
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="source") == 0
    assert w.value("pipeline_check_canaries_lost_total", stage_reached="kafka") == 0
    assert not w.watch.retiring or all(p.gen.end > w.watch.ring.oldest_open for p in w.watch.retiring)


def test_a_probe_that_stops_on_an_error_is_replaced_under_a_new_run_id(start_watch: Callable[..., Running]) -> None:
    FlakyProbe.failures_left = 1
    w = start_watch(pipe="flaky", api_type="flaky")
    first = w.watch.active.gen.run if w.watch.active else None
    wait_for(lambda: w.value("pipeline_check_probe_failures_total", stage="api") == 1, 15, "the failure counted")
    wait_for(lambda: w.watch.active is not None and w.watch.active.gen.run != first, 15, "a new run id")
    doc = wait_for(w.verdict_is("passed"), 15, "a passing window under the new run id")
    assert any("api probe of" in n["note"] and "went away" in n["note"] for n in doc["notes"])
    delivered = w.value("pipeline_check_canaries_delivered_total", stage="api")
    wait_for(lambda: w.value("pipeline_check_canaries_delivered_total", stage="api") > delivered + 10, 15, "deliveries")


def test_a_source_that_refuses_a_canary_is_started_afresh(start_watch: Callable[..., Running]) -> None:
    w = start_watch(pipe="refusing", source="crash_after = 5")
    wait_for(lambda: w.value("pipeline_check_injection_failures_total") >= 1, 15, "the refusal counted")
    wait_for(lambda: w.value("pipeline_check_canaries_injected_total") >= 8, 15, "canaries after the restart")
    wait_for(lambda: w.value("pipeline_check_canaries_lost_total", stage_reached="source") >= 1, 15, "the refused one")
    assert any("refused a canary" in note for _, note in w.watch.notes.recent)
