"""API response times and the API load's query mix and figures."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pipeline_check.backends.load import MAX_WINDOW_MS, MIN_WINDOW_MS, QueryMix, response_figures
from pipeline_check.reporting.console import ConsoleReporter
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import JUnitReporter
from pipeline_check.verdict.response_times import ResponseTimes


def test_response_times_time_requests_and_count_failures() -> None:
    times = ResponseTimes()

    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    async def refuse() -> str:
        raise OSError("refused")

    assert asyncio.run(times.timed(answer)) == "ok"
    with pytest.raises(OSError):
        asyncio.run(times.timed(refuse))
    assert times.failed == 1 and times.seconds[0] >= 0.01
    assert times.seconds[1] == float("inf")  # no answer: infinitely slow, as the checks count it
    assert times.stats()["n"] == 2 and times.stats()["max"] == float("inf") and ResponseTimes().stats() == {}


def test_the_mix_draws_windows_inside_the_run() -> None:
    mix = QueryMix(("BTCUSDT", "CANARYUSDT"), since_ms=lambda: 1_000_000, now_ms=lambda: 1_060_000)
    rng = random.Random(1)
    draws = [mix.draw(rng) for _ in range(500)]
    assert {symbol for symbol, _, _ in draws} == {"BTCUSDT", "CANARYUSDT"}
    assert all(1_000_000 <= end <= 1_060_000 for _, _, end in draws)
    assert all(MIN_WINDOW_MS <= end - start <= MAX_WINDOW_MS for _, start, end in draws)


class FakeLoad:
    concurrency = 8

    def __init__(self, idle: list[float], loaded: list[float]) -> None:
        self.idle = ResponseTimes(idle)
        self.loaded = ResponseTimes(loaded, failed=2)


def test_response_figures_compare_loaded_with_idle() -> None:
    requests = ResponseTimes([0.1] * 30)
    plain = response_figures(requests, None, {})
    assert plain.concurrency == 0 and plain.requests["p95"] == 0.1 and plain.degradation is None
    load = FakeLoad(idle=[0.05] * 20, loaded=[0.2] * 100)
    figures = response_figures(requests, load, {"e2e": {"p95": 1.5}})  # type: ignore[arg-type]
    assert figures.concurrency == 8 and figures.loaded_failed == 2
    assert figures.idle["p95"] == 0.05 and figures.loaded["p95"] == 0.2
    assert figures.degradation == pytest.approx(4.0)
    assert figures.freshness_under_load == {"e2e": {"p95": 1.5}}


def test_reports_carry_the_api_response_figures(tmp_path: Path, make_run: Callable[..., Any]) -> None:
    run = make_run(count=20, thresholds=("lost == 0",))
    load = FakeLoad(idle=[0.05] * 20, loaded=[0.2] * 100)
    figures = response_figures(ResponseTimes([0.1] * 30), load, {"e2e": run.summary.e2e})  # type: ignore[arg-type]
    finished = dataclasses.replace(run.finished, responses=figures)
    out = io.StringIO()
    handlers = [
        JsonReporter(tmp_path / "r.json"),
        JUnitReporter(tmp_path / "r.xml"),
        ConsoleReporter(Console(file=out, width=200), live=False),
    ]
    for handler in handlers:
        for event in [*run.events[:-1], finished]:
            handler.handle(event)
        handler.close()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["api_response"]["degradation"] == pytest.approx(4.0) and doc["api_response"]["idle"]["n"] == 20
    assert doc["e2e"]["latency"] == doc["api_response"]["freshness_under_load"]["e2e"]  # canary figures stay
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").getroot().iter("property")}
    assert props["api.load.degradation"] == "4.000" and props["api.response.p95_s"] == "0.100000"
    assert props["api.load.idle_p95_s"] == "0.050000" and props["api.load.loaded_p95_s"] == "0.200000"
    text = out.getvalue()
    assert "API response times: p50 100.0ms" in text
    assert "API under 8 concurrent queries: p95 idle 50.0ms, loaded 200.0ms (x4.00" in text
