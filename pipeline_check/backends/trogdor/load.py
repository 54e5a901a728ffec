"""Background load on Trogdor's agents for the length of a run: the ProduceBench tasks created and watched
until each is sending, then watched while the run goes on (a task that fails is told at once), stopped with
the run, and the rate they achieved read from their final counts.

The rate is the tasks' records (their final counts: acknowledged or failed, as ProduceBench counts them) over
the span from the moment the first was seen sending to the moment the tasks were told to stop, on the
validator's clock: every record counted was made by then (a stopped producer still sends what it holds).
Their "done" is not the end: the coordinator relays a worker's status about once a second, so it is seen a
second or more late, which on a 15 s run read 175/s of 200/s sent. The start may be seen up to a second late
too; a task's start before it sends (checking the topic, making its producer: seconds on a loaded machine)
does not count against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pipeline_check.backends.trogdor.client import Coordinator, TaskState
from pipeline_check.backends.trogdor.spec import BenchPlan
from pipeline_check.core.errors import EndpointError
from pipeline_check.verdict.summary import AgentLoad, BackgroundLoad

SENDING_TIMEOUT = 60.0  # seconds every task gets to start sending (its agent checks the topic first)
STOP_TIMEOUT = 60.0  # seconds every task gets to report its final count once stopped (it sends what it holds)
ABORT_TIMEOUT = 5.0  # the same on a run that did not finish (an error, Ctrl-C): stop requests sent, no long wait
POLL = 0.25
WATCH_EVERY = 1.0


class TrogdorLoad:
    """``plan``'s tasks on ``coordinator``; ``note`` tells what happens to them."""

    def __init__(
        self,
        coordinator: Coordinator,
        plan: BenchPlan,
        note: Callable[[str], None],
        *,
        detail: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordinator = coordinator
        self.plan = plan
        self.note = note
        self.detail = detail
        self.clock = clock
        self.created: list[str] = []
        self._states: dict[str, TaskState] = {}
        self._sending_since: dict[str, float] = {}  # task -> when it was first seen sending
        self._stopping_at: float | None = None  # when the tasks were told to stop
        self._all_done = False  # every task seen done: their counts are final
        self._told: set[str] = set()

    async def start(self) -> None:
        """Create every task and wait until each is sending; ``EndpointError`` if one fails or is slow."""
        for task in self.plan.tasks:
            await self.coordinator.create(task.task_id, task.spec)
            self.created.append(task.task_id)
        shares = ", ".join(f"{t.agent} {t.rate:,}/s" for t in self.plan.tasks)
        rounded = f" (Trogdor throttles in steps of 10/s per agent; {self.plan.asked:g}/s asked)"
        self.note(f"background: {self.plan.target:,}/s on Trogdor ({shares}){rounded if self.plan.rounded else ''}")
        deadline = self.clock() + SENDING_TIMEOUT
        while True:
            states = await self._read()
            for task_id, state in states.items():
                if state.sending:
                    self._sending_since.setdefault(task_id, self.clock())
            failed = {i: s for i, s in states.items() if s.state == "DONE"}
            if failed:
                task_id, state = next(iter(failed.items()))
                raise EndpointError(
                    "load.background.agents", task_id, f"Trogdor task ended before sending: {state.error or 'done'}",
                    "check the agents' names and that they reach load.background.bootstrap",
                )  # fmt: skip
            if all(s.sending for s in states.values()):
                return
            if self.clock() >= deadline:
                waiting = {i: s.status or s.state for i, s in states.items() if not s.sending}
                raise EndpointError(
                    "load.background.coordinator", self.coordinator.url,
                    f"Trogdor tasks not sending after {SENDING_TIMEOUT:g}s: {waiting}",
                    "are the agents running and do they reach Kafka?",
                )  # fmt: skip
            await asyncio.sleep(POLL)

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: tell a task that fails or ends before the run does (once each)."""
        while not stop.is_set():
            try:
                states = await self._read()
            except EndpointError as exc:
                self.note(f"background: {exc}")
                states = {}
            for task_id, state in states.items():
                if state.state == "DONE" and task_id not in self._told:
                    self._told.add(task_id)
                    why = state.error or "its duration or record bound reached"
                    self.note(f"background: Trogdor task {task_id} ended during the run ({why})")
            try:
                await asyncio.wait_for(stop.wait(), WATCH_EVERY)
            except TimeoutError:
                pass

    async def stop(self, cut_short: bool = False) -> BackgroundLoad:
        """Stop every task created (whatever ends the run) and the figures of their final counts, waiting for
        the tasks to say they are done ``STOP_TIMEOUT`` at most, ``ABORT_TIMEOUT`` for a run ``cut_short``."""
        patience = ABORT_TIMEOUT if cut_short else STOP_TIMEOUT
        self._stopping_at = self.clock()
        try:
            for task_id in self.created:
                try:
                    await self.coordinator.stop(task_id)
                except EndpointError as exc:
                    self.note(f"background: stopping {task_id}: {exc}")
            deadline = self.clock() + patience
            while self.created:
                try:
                    states = await self._read()
                except EndpointError as exc:
                    self.note(f"background: {exc}")
                    break
                if all(s.state in ("DONE", "UNKNOWN") for s in states.values()):
                    self._all_done = True
                    break
                if self.clock() >= deadline:
                    self.note(f"background: Trogdor tasks not done {patience:g}s after they were stopped")
                    break
                await asyncio.sleep(POLL)
            return self.figures()
        finally:
            await self.coordinator.close()

    def figures(self) -> BackgroundLoad:
        """The achieved rate from the tasks' last known states."""
        agents = []
        for task in self.plan.tasks:
            state = self._states.get(task.task_id)
            error = state.error if state is not None else "never created"
            if state is not None and state.state != "DONE":
                error = error or f"still {state.state} when the run ended"
            agents.append(AgentLoad(task.agent, task.rate, state.sent if state is not None else None, error))
        counts = [a.sent for a in agents if a.sent is not None]
        began = min(self._sending_since.values(), default=None)
        stopped = self._stopping_at if self._all_done else None  # the counts are final only once all are done
        sent, seconds = None, 0.0
        if agents and len(counts) == len(agents) and began is not None and stopped is not None:
            sent, seconds = sum(counts), stopped - began
        rate = sent / seconds if sent is not None and seconds > 0 else None
        return BackgroundLoad("trogdor", self.plan.asked, rate, sent, seconds, tuple(agents), self.detail)

    async def _read(self) -> dict[str, TaskState]:
        for task_id in self.created:
            self._states[task_id] = await self.coordinator.task(task_id)
        return {task_id: self._states[task_id] for task_id in self.created}
