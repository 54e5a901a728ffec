"""Polling coroutines with a deadline, for tests that wait on asynchronous clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline_check.core.polling import Deadline, intervals

T = TypeVar("T")


async def apoll(
    check: Callable[[], Awaitable[T | None]], timeout: float, *, initial: float = 0.02, cap: float = 0.5
) -> T | None:
    """Async twin of :func:`poll` for coroutines."""
    deadline = Deadline.after(timeout)
    for interval in intervals(initial, cap):
        result = await check()
        if result:
            return result
        if deadline.expired():
            return None
        await asyncio.sleep(min(interval, deadline.remaining()))
    raise AssertionError("unreachable")  # pragma: no cover
