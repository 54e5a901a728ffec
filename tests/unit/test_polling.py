"""The poll policy every probe shares: quick while canaries wait at its stage or the run settles, idle
otherwise (an idle wait ends once canaries wait), never above the request rate cap, and a resolution that
follows the intervals really used while canaries waited."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from pipeline_check.backends.polling import Pace, PollPolicy, PollSettings


class Waiting:
    """A run's count of canaries waiting at each stage, set by the test."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, stage: str) -> int:
        return self.count


def policy(waiting: Waiting, **settings: float) -> PollPolicy:
    return PollPolicy(PollSettings(**settings), "api", Pace(waiting, poll_interval=0.01, idle_interval=5.0))


def test_fast_while_canaries_wait_or_the_run_settles_idle_otherwise() -> None:
    waiting = Waiting()
    p = policy(waiting)
    assert not p.fast and p.interval() == 5.0
    waiting.count = 3
    assert p.fast and p.interval() == 0.01
    waiting.count = 0
    p.pace.settling = True
    assert p.fast and p.interval() == 0.01


def test_settings_override_the_run_modes_defaults_and_idle_is_never_faster() -> None:
    p = policy(Waiting(), poll_interval=0.5, idle_interval=0.2, max_request_rate=4)
    assert (p.fast_interval, p.idle_interval, p.max_request_rate) == (0.5, 0.5, 4)
    with pytest.raises(ValidationError):
        PollSettings(max_request_rate=0)
    assert PollSettings.model_validate({"poll_interval": "250ms", "idle_interval": "2s"}).idle_interval == 2.0


def test_the_watch_looks_as_often_as_it_sends_canaries() -> None:
    one = Pace.for_watch(Waiting(), rate=1.0)
    assert (one.poll_interval, one.idle_interval, one.max_request_rate) == (1.0, 10.0, 1.0)
    busy = Pace.for_watch(Waiting(), rate=100.0)
    assert (busy.poll_interval, busy.max_request_rate) == (0.1, 10.0)


def test_an_idle_wait_ends_as_soon_as_canaries_wait() -> None:
    waiting = Waiting()
    p = policy(waiting)

    async def go() -> float:
        stop = asyncio.Event()
        p.looked()
        began = time.monotonic()
        asyncio.get_running_loop().call_later(0.1, lambda: setattr(waiting, "count", 1))
        await asyncio.wait_for(p.wait(stop), 2)
        return time.monotonic() - began

    took = asyncio.run(go())
    assert 0.09 < took < 1.0, took


def test_a_wait_before_any_look_ends_after_its_interval_and_stop_ends_it_at_once() -> None:
    waiting = Waiting()
    waiting.count = 1
    p = policy(waiting, poll_interval=0.05)

    async def go() -> tuple[float, float]:
        stop = asyncio.Event()
        began = time.monotonic()
        await asyncio.wait_for(p.wait(stop), 2)  # no look yet: the interval counts from the wait's start
        fast = time.monotonic() - began
        waiting.count = 0
        p.looked()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        began = time.monotonic()
        await asyncio.wait_for(p.wait(stop), 2)  # idle (5 s), ended by stop
        return fast, time.monotonic() - began

    fast, stopped = asyncio.run(go())
    assert 0.04 < fast < 1.0, fast
    assert stopped < 1.0, stopped


def test_requests_never_exceed_the_cap_even_when_concurrent() -> None:
    p = policy(Waiting(), max_request_rate=50)
    times: list[float] = []

    async def one() -> None:
        await p.request()
        times.append(time.monotonic())

    async def go() -> None:
        await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(go())
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert len(times) == 6 and min(gaps) >= 0.018, gaps  # 1/50 s apart (timer slack aside)
    assert p.throttled_s > 0.05


def test_no_cap_means_no_wait() -> None:
    p = policy(Waiting())

    async def go() -> float:
        began = time.monotonic()
        for _ in range(100):
            await p.request()
        return time.monotonic() - began

    assert asyncio.run(go()) < 0.05


def test_resolution_counts_looks_while_canaries_waited_from_when_they_began_to() -> None:
    now = [0.0]
    waiting = Waiting()
    p = PollPolicy(PollSettings(), "api", Pace(waiting), clock=lambda: now[0])
    for at in (0.0, 5.0, 10.0):  # idle looks: no canary could have been seen first
        now[0] = at
        p.looked()
    now[0] = 11.0
    waiting.count = 1
    assert p.fast  # canaries wait from 11.0
    for at in (11.2, 11.4, 11.6):
        now[0] = at
        p.looked()
    assert p.resolution == pytest.approx(0.2)  # the 10.0 -> 11.2 gap counts from 11.0, not 10.0
    for start in (11.6, 12.6, 13.6, 14.6):  # a long poll that did not wait at the stage for a second, 4 times
        p.blind(start, start + 1.0)
    assert p.resolution == pytest.approx(1.0)
    waiting.count = 0
    p.blind(15.6, 25.6)  # nothing waited: not counted
    assert p.resolution == pytest.approx(1.0)
