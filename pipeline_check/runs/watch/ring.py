"""The canary ring: the watch's last ``capacity`` canaries, in fixed numpy arrays, so memory stays flat
however long it runs.

Canaries are numbered in injection order across the whole process (their *index*); canary ``i`` lives in
slot ``i % capacity`` until canary ``i + capacity`` takes it. Each belongs to a :class:`Generation` (one
run id, whose sequences number its canaries from 0), so a tag maps back to its index through the
generation that made it.

A canary is *open* until its loss deadline, ``lost_after`` seconds after its injection: probes look for
open canaries only. When the deadline passes the canary *closes*: delivered on time if the final stage
saw it by then, otherwise lost, counted under the last stage it had reached by the deadline. Sightings
after that still go into the slot (the window's figures use them) but no longer change what was
counted. The capacity covers the evaluation window plus the loss deadline, so a slot is reused only
when its canary is closed and out of the window; should the loop ever fall that far behind, the canary
is closed before its slot is reused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline_check.backends.probe import Ref
from pipeline_check.canary.fidelity import FieldDiff
from pipeline_check.canary.tags import MAX_SEQ, RunId
from pipeline_check.canary.time_forms import Instant
from pipeline_check.canary.trades import Trade, TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.runs.watch.metrics import WatchMetrics
from pipeline_check.trace.book import StageColumns, send_windows
from pipeline_check.trace.stages import SOURCE, Route

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Slots = npt.NDArray[np.intp]


@dataclass(slots=True)
class Generation:
    """One run id of the watch: its canaries are indexes ``base .. base + sent - 1``; it takes at most
    ``limit`` (at most ``2**26``, the sequence space of a tag)."""

    run: RunId
    base: int
    limit: int = MAX_SEQ + 1
    sent: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.limit <= MAX_SEQ + 1:
            raise ValueError(f"a generation holds 1 to {MAX_SEQ + 1} canaries, not {self.limit}")

    @property
    def end(self) -> int:
        """The index after its last canary."""
        return self.base + self.sent

    @property
    def full(self) -> bool:
        return self.sent >= self.limit


@dataclass(slots=True)
class StageSlots(StageColumns):
    """One stage's observations, one entry per slot (the trace book's columns, over the ring)."""

    def clear(self, slot: int) -> None:
        self.first[slot] = self.last[slot] = self.source_ms[slot] = np.nan
        self.gone_at[slot] = self.restored_after[slot] = np.nan
        self.copies[slot] = self.gone[slot] = self.digest[slot] = 0
        self.live[slot] = self.shard[slot] = self.position[slot] = -1
        self.untimed[slot] = self.checked[slot] = False


class CanaryRing:
    """The last ``capacity`` canaries of a watch, what each stage saw of them, and the counters they move."""

    def __init__(
        self,
        capacity: int,
        route: Route,
        content: TradeFactory,
        clock: Clock,
        lost_after: float,
        metrics: WatchMetrics,
    ) -> None:
        if content.count != capacity:
            raise ValueError(f"the content factory holds {content.count} canaries, the ring {capacity}")
        self.capacity = capacity
        self.route = route
        self.content = content  # prices, quantities and symbols per slot
        self.clock = clock
        self.lost_after = lost_after
        self.metrics = metrics
        self.index: Ints = np.full(capacity, -1, np.int64)  # the canary a slot holds
        self.tag: Ints = np.zeros(capacity, np.int64)
        self.injected_at: Floats = np.full(capacity, np.nan)
        self.sent_ms: Ints = np.zeros(capacity, np.int64)
        self.lateness: npt.NDArray[np.float32] = np.zeros(capacity, np.float32)  # behind schedule, seconds
        self.paused: npt.NDArray[np.bool_] = np.zeros(capacity, bool)  # first canary after a pause
        self.duplicated: npt.NDArray[np.bool_] = np.zeros(capacity, bool)
        self.compared: npt.NDArray[np.uint16] = np.zeros(capacity, np.uint16)
        self.stages = {stage: StageSlots.empty(capacity) for stage in route.stages}
        self.diffs: dict[int, list[FieldDiff]] = {}  # per slot
        self.shards: dict[str, tuple[int, ...]] = {}
        self.ordered: set[str] = set()
        self.unobservable: dict[str, dict[str, str]] = {}  # per stage: what it cannot observe, and why
        self.next_index = 0  # the index the next canary gets
        self.oldest_open = 0  # every canary below this index is closed
        self.closed_until = -math.inf  # every canary whose deadline is not after this is closed

    # -- injection and closing -------------------------------------------------------------------------

    def inject(self, gen: Generation, at: float, *, lateness: float = 0.0, paused: bool = False) -> Trade:
        """Record the next canary of ``gen`` as sent at ``at``; return it, stamped with its send time."""
        if gen.full or gen.end != self.next_index:
            raise RuntimeError(f"generation {gen.run} cannot take canary {self.next_index}")
        index = self.next_index
        while index - self.capacity >= self.oldest_open:  # its slot's canary is still open: close it first
            self._close_oldest()
        slot = index % self.capacity
        seq = gen.sent
        self.index[slot] = index
        self.tag[slot] = gen.run.tag(seq)
        self.injected_at[slot] = at
        self.sent_ms[slot] = ms = self.clock.wall_ms(at)
        self.lateness[slot] = lateness
        self.paused[slot] = paused
        self.duplicated[slot] = False
        self.compared[slot] = 0
        self.diffs.pop(slot, None)
        for column in self.stages.values():
            column.clear(slot)
        gen.sent += 1
        self.next_index += 1
        self.metrics.injected.inc()
        return self.canary(slot, ms)

    def canary(self, slot: int, sent_ms: int) -> Trade:
        """The canary in ``slot`` as it was sent."""
        tag = int(self.tag[slot])
        return dataclasses.replace(self.content.canary(slot, sent_ms), trade_id=tag, seq=tag & MAX_SEQ)

    def close_due(self, now: float) -> None:
        """Close every open canary whose loss deadline is not after ``now``."""
        self.closed_until = max(self.closed_until, now)
        while self.oldest_open < self.next_index:
            if self.injected_at[self.oldest_open % self.capacity] + self.lost_after > now:
                return
            self._close_oldest()

    def _close_oldest(self) -> None:
        slot = self.oldest_open % self.capacity
        deadline = float(self.injected_at[slot]) + self.lost_after
        if not self.stages[self.route.final].first[slot] <= deadline:  # NaN (never seen) is not on time either
            self.metrics.lost[self._reached_by(slot, deadline)].inc()
        self.oldest_open += 1

    def _reached_by(self, slot: int, deadline: float) -> str:
        reached = SOURCE
        for stage, column in self.stages.items():
            if column.first[slot] <= deadline:
                reached = stage
        return reached

    @property
    def in_flight(self) -> int:
        return self.next_index - self.oldest_open

    # -- what probes tell, through a generation's recorder ------------------------------------------

    def seen(
        self,
        gen: Generation,
        stage: str,
        tag: object,
        at: float,
        *,
        ref: Ref | None = None,
        source_ms: float | None = None,
        copies: int | None = None,
        timed: bool = True,
    ) -> bool:
        """A sighting of ``tag`` at ``stage`` (the trace book's rules); True the first time."""
        slot = self.slot_of(gen, tag)
        if slot is None:
            return False
        column = self.stages[stage]
        first = column.sight(slot, at, ref, source_ms, copies, timed)
        if column.copies[slot] > 1 and not self.duplicated[slot]:
            self.duplicated[slot] = True
            self.metrics.duplicated.inc()
        if first:
            self._first_sighting(stage, slot, at, timed)
        return first

    def _first_sighting(self, stage: str, slot: int, at: float, timed: bool) -> None:
        metrics = self.metrics
        metrics.delivered[stage].inc()
        upstream = self.route.upstream[stage]
        since = self.injected_at[slot] if upstream == SOURCE else self.stages[upstream].first[slot]
        if timed and not math.isnan(since):
            metrics.hop[stage].observe(max(0.0, at - since))
        if stage == self.route.final:
            if timed:
                metrics.e2e.observe(at - self.injected_at[slot])
            if self.index[slot] < self.oldest_open:
                metrics.late.inc()

    def diff(
        self,
        gen: Generation,
        stage: str,
        tag: object,
        record: Mapping[str, object],
        fields: Mapping[str, str],
        at: float | None = None,
    ) -> None:
        """Compare a version of a stage's record of ``tag`` with what was sent (the trace book's rules)."""
        slot = self.slot_of(gen, tag)
        if slot is None:
            return
        sent = self.canary(slot, int(self.sent_ms[slot])).to_dict()
        when = self.clock.now() if at is None else at
        tag_value = int(self.tag[slot])
        self.compared[slot] += self.stages[stage].version(
            slot, stage, tag_value, sent, record, fields, when, self.diffs
        )

    def placed_at(self, gen: Generation, stage: str, tag: object, field: str, instant: Instant, shown: str) -> None:
        """The stage holds ``tag`` at ``instant`` (the trace book's rules)."""
        slot = self.slot_of(gen, tag)
        if slot is None:
            return
        where = (field, instant, shown)
        self.stages[stage].placed(slot, stage, int(self.tag[slot]), int(self.sent_ms[slot]), where, self.diffs)

    def cannot_observe(self, stage: str, what: str, why: str) -> None:
        self.unobservable.setdefault(stage, {}).setdefault(what, why)

    def slot_of(self, gen: Generation, tag: object) -> int | None:
        """The slot of ``gen``'s canary ``tag``; None for any other value, and for a canary of ``gen``
        that is no longer in the ring."""
        value = _integer(tag)
        seq = None if value is None else gen.run.seq_of(value)
        if seq is None or seq >= gen.sent:
            return None
        index = gen.base + seq
        slot = index % self.capacity
        return slot if self.index[slot] == index else None

    # -- what probes ask -------------------------------------------------------------------------------

    def open_slots(self, gen: Generation) -> Slots:
        """Slots of ``gen``'s canaries whose loss deadline has not passed, oldest first."""
        return np.arange(max(gen.base, self.oldest_open), gen.end) % self.capacity

    def pending(self, gen: Generation, stage: str) -> Slots:
        """Open canaries of ``gen`` not seen at ``stage`` yet."""
        slots = self.open_slots(gen)
        return slots[np.isnan(self.stages[stage].first[slots])]

    def windows_ms(self, slots: Slots) -> dict[str, tuple[int, int]]:
        """Per canary symbol, the send-time window ``[first, last]`` (wall ms) of ``slots``."""
        return send_windows(self.content.symbols, self.content.symbol_index[slots], self.sent_ms[slots])

    def due(self, gen: Generation, stage: str) -> int:
        """Open canaries of ``gen`` that the upstream stage holds and ``stage`` has not shown yet."""
        upstream = self.route.upstream[stage]
        if upstream == SOURCE:
            return 0
        slots = self.pending(gen, stage)
        return int((~np.isnan(self.stages[upstream].first[slots])).sum())

    def pending_refs(self, gen: Generation, stage: str, at: str) -> tuple[Ints, npt.NDArray[np.int32], Ints]:
        """Open canaries of ``gen`` not seen at ``stage`` but seen at ``at``: tags, shards and positions there."""
        slots = self.pending(gen, stage)
        column = self.stages[at]
        located = slots[~np.isnan(column.first[slots])]
        return self.tag[located], column.shard[located], column.position[located]

    def declare_shards(self, stage: str, shards: Sequence[int]) -> None:
        self.shards[stage] = tuple(sorted(shards))

    def declare_ordered(self, stage: str) -> None:
        self.ordered.add(stage)

    # -- the window --------------------------------------------------------------------------------

    def closed_since(self, since: float) -> Slots:
        """Slots of closed canaries injected at ``since`` or later, in injection order."""
        slots = np.arange(max(0, self.next_index - self.capacity), self.oldest_open) % self.capacity
        return slots[self.injected_at[slots] >= since]

    def on_time(self, slots: Slots) -> int:
        """How many of these canaries the final stage saw within ``lost_after`` of their injection."""
        latency = self.stages[self.route.final].first[slots] - self.injected_at[slots]
        return int((latency <= self.lost_after).sum())


def _integer(tag: object) -> int | None:
    if isinstance(tag, int) and not isinstance(tag, bool):
        return tag
    try:
        return int(str(tag))
    except ValueError:
        return None
