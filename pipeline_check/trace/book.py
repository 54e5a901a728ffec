"""The trace book: per canary, when it was injected and first/last seen at each stage, how many copies
each stage holds, where it sits there (a generic reference: partition and offset, snapshot), and where its
fields differ from what was sent.

A canary row's whole life at a stage is kept: first seen (and whether that time was taken while watching
with a known resolution, or only found by a last sweep: then it has no measured latency), every later
version compared with what was sent (a digest of the compared fields; a diff only when it changes), every
interval it was gone from the stage's view (a retraction, restored or not) and whether its time field
still holds its send time.

Probes write through the narrow :class:`~pipeline_check.backends.probe.Recorder` interface (``seen``,
``diff``, ``placed_at``, ``cannot_observe``, ``declare_shards``) and read only what they need through
named methods (pending send-time windows, what is due from upstream, references recorded upstream).
Storage is columnar (numpy arrays indexed by sequence), so a million-canary run fits in memory and every
statistic is one vectorised pass. Times are monotonic seconds of the run's
:class:`~pipeline_check.core.clock.Clock`; source-reported times (broker timestamp, snapshot time) are
kept beside them in wall-clock milliseconds, never instead of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from pipeline_check.canary.fidelity import FieldDiff, compare
from pipeline_check.canary.tags import RunId, parse
from pipeline_check.canary.time_forms import Instant
from pipeline_check.canary.trades import Trade, TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.stages import SOURCE, Route

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Ref:
    """Where a stage holds a canary: a shard (Kafka partition; -1 where a stage has none) and a position
    in it (offset, snapshot id, an ordering column's value)."""

    shard: int
    position: int


@dataclass(slots=True)
class StageColumns:
    """One stage's observations, one slot per canary (the trace book's, and the watch ring's)."""

    first: Floats
    last: Floats
    copies: npt.NDArray[np.uint32]  # most copies seen at once (a view) or in all (a stream)
    live: npt.NDArray[np.int32]  # copies in the stage's current view; -1: the stage is a stream
    source_ms: Floats  # source-reported time (broker timestamp, snapshot time), wall-clock ms
    shard: npt.NDArray[np.int32]
    position: Ints
    untimed: npt.NDArray[np.bool_]  # first found when the probe was not watching for it: no latency
    gone_at: Floats  # since when the row is gone from the stage's view (NaN: there, or never seen)
    gone: npt.NDArray[np.uint16]  # times the row went gone after it was seen (retractions)
    restored_after: Floats  # seconds its last completed gone interval lasted (NaN: never restored)
    digest: Ints  # of the compared fields of the last version compared (0: none compared)
    checked: npt.NDArray[np.bool_]  # its time field was compared with its send time

    @classmethod
    def empty(cls, n: int) -> Self:
        return cls(
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.zeros(n, np.uint32),
            np.full(n, -1, np.int32),
            np.full(n, np.nan),
            np.full(n, -1, np.int32),
            np.full(n, -1, np.int64),
            np.zeros(n, bool),
            np.full(n, np.nan),
            np.zeros(n, np.uint16),
            np.full(n, np.nan),
            np.zeros(n, np.int64),
            np.zeros(n, bool),
        )

    def sight(
        self, i: int, at: float, ref: Ref | None, source_ms: float | None, copies: int | None, timed: bool = True
    ) -> bool:
        """A sighting in slot ``i`` by the rules of ``TraceBook.seen``; True the first time."""
        if copies is None:
            self.copies[i] += 1
        else:
            self.live[i] = copies
            self.copies[i] = max(int(self.copies[i]), copies)
            if copies == 0:
                if not math.isnan(self.first[i]) and math.isnan(self.gone_at[i]):
                    self.gone_at[i] = at
                    self.gone[i] = min(int(self.gone[i]) + 1, np.iinfo(np.uint16).max)
                return False
            if not math.isnan(self.gone_at[i]):
                self.restored_after[i] = at - self.gone_at[i]
                self.gone_at[i] = np.nan
        self.last[i] = at
        if not math.isnan(self.first[i]):
            return False
        self.first[i] = at
        self.untimed[i] = not timed
        if source_ms is not None:
            self.source_ms[i] = source_ms
        if ref is not None:
            self.shard[i] = ref.shard
            self.position[i] = ref.position
        return True

    def version(
        self,
        i: int,
        stage: str,
        tag: int,
        sent: Mapping[str, object],
        record: Mapping[str, object],
        fields: Mapping[str, str],
        at: float,
        diffs: dict[int, list[FieldDiff]],
    ) -> bool:
        """Compare a version of the row in slot ``i`` with what was sent, when its compared fields changed
        since the last version compared (a digest tells: no diff runs for a version seen before); add the
        field differences not known yet to ``diffs[i]`` (those of a later version name the value the stage
        showed before and how long after the first sighting it changed). True for the first version."""
        digest = _digest(record, fields)
        before = int(self.digest[i])
        if before == digest:
            return False
        self.digest[i] = digest
        known = diffs.get(i, [])
        first_version = before == 0
        after_s = None if first_version or math.isnan(self.first[i]) else max(0.0, at - float(self.first[i]))
        found: list[FieldDiff] = []
        for name, expected, actual in compare(sent, record, fields):
            shown = [d for d in (*known, *found) if d.stage == stage and d.field == name]
            if shown and shown[-1].actual == actual:
                continue
            previous = shown[-1].actual if shown else (None if first_version else expected)
            found.append(FieldDiff(stage, tag, name, expected, actual, previous, after_s))
        if found:
            diffs.setdefault(i, []).extend(found)
        return first_version

    def placed(
        self,
        i: int,
        stage: str,
        tag: int,
        sent_ms: int,
        where: tuple[str, Instant, str],
        diffs: dict[int, list[FieldDiff]],
    ) -> None:
        """Its time field (``where``: the field, the instant read from it, as shown) compared with its send
        time at the precision of the field's form: moved, a difference naming the field goes into
        ``diffs[i]`` (once) and its first sighting has no measured latency (the probe looked for it at its
        send time, not where it was)."""
        field, instant, shown = where
        self.checked[i] = True
        if instant.same_as(sent_ms):
            return
        self.untimed[i] = True
        if all(d.stage != stage or d.field != field for d in diffs.get(i, ())):
            diffs.setdefault(i, []).append(FieldDiff(stage, tag, field, f"{sent_ms} (its send time, epoch ms)", shown))


def _digest(record: Mapping[str, object], fields: Mapping[str, str]) -> int:
    """A non-zero digest of the fields ``fields`` compares (0 means none compared)."""
    digest = hash(tuple(repr(record.get(name, _MISSING)) for name in fields))
    return digest or 1


_MISSING = object()


class TraceBook:
    """Observations of one run's canaries at every configured stage."""

    def __init__(
        self,
        run: RunId,
        factory: TradeFactory,
        route: Route,
        clock: Clock,
        sent_record: Callable[[Trade], Mapping[str, object]] | None = None,
    ) -> None:
        n = factory.count
        self.run = run
        self.factory = factory
        # what a subscriber received for a trade (the source's wire record), for the fidelity diff
        self.sent_record: Callable[[Trade], Mapping[str, object]] = sent_record or Trade.to_dict
        self.route = route
        self.clock = clock
        self.injected_at: Floats = np.full(n, np.nan)
        self.sent_ms: Ints = np.zeros(n, np.int64)
        self.injected = 0
        self._columns = {stage: StageColumns.empty(n) for stage in route.stages}
        self._reached = dict.fromkeys(route.stages, 0)
        self.shards: dict[str, tuple[int, ...]] = {}  # per stage: the shards it has (Kafka partitions)
        self.ordered: set[str] = set()  # stages whose positions are an order (offsets in a partition)
        self.diffs: dict[int, list[FieldDiff]] = {}
        self.compared = 0  # canary records compared field by field (first versions)
        # per stage, what it cannot observe (a count name: retracted, duplicates) and why
        self.unobservable: dict[str, dict[str, str]] = {}
        self.unexpected = 0  # this run's tags the injector never sent
        self.foreign = 0  # other runs' canaries seen on the way

    @property
    def stages(self) -> tuple[str, ...]:
        return self.route.stages

    # -- injection -------------------------------------------------------------------------------------

    def inject(self, seq: int, at: float) -> Trade:
        """Record that canary ``seq`` is being sent now; return it, stamped with the send time."""
        ms = self.clock.wall_ms(at)
        self.injected_at[seq] = at
        self.sent_ms[seq] = ms
        self.injected = max(self.injected, seq + 1)
        return self.factory.canary(seq, ms)

    # -- what probes tell ------------------------------------------------------------------------------

    def seen(
        self,
        stage: str,
        tag: object,
        at: float,
        *,
        ref: Ref | None = None,
        source_ms: float | None = None,
        copies: int | None = None,
        timed: bool = True,
    ) -> bool:
        """A sighting of ``tag`` at ``stage``; True the first time it is seen there.

        ``copies`` None: one more copy (a stream: every record counts). ``copies=n``: the stage's current
        view (a table state, an API answer) holds ``n`` copies; 0 after a sighting means it is gone, and a
        later sighting that it is back ends that interval (a retraction, restored). ``timed`` False: found
        by a look that was not watching for it (a last sweep, a wide search), so ``at`` is no arrival time.
        """
        seq = self.seq_of(tag)
        if seq is None:
            return False
        if not self._columns[stage].sight(seq, at, ref, source_ms, copies, timed):
            return False
        self._reached[stage] += 1
        return True

    def diff(
        self,
        stage: str,
        tag: object,
        record: Mapping[str, object],
        fields: Mapping[str, str],
        at: float | None = None,
    ) -> None:
        """Compare a version of the stage's record of ``tag`` with what was sent (every version a stage
        shows: one whose compared fields changed since it was first seen is corrupted, with the value
        before); keep the fields that differ. ``at``: when the stage showed it (default: now)."""
        seq = self._seq(tag)
        if seq is None or seq >= self.injected:
            return
        sent = self.sent_record(self.factory.canary(seq, int(self.sent_ms[seq])))
        when = self.clock.now() if at is None else at
        self.compared += self._columns[stage].version(
            seq, stage, self.run.tag(seq), sent, record, fields, when, self.diffs
        )

    def placed_at(self, stage: str, tag: object, field: str, instant: Instant, shown: str) -> None:
        """The stage holds ``tag`` at ``instant`` (its ``field``, shown as ``shown``): moved from its send
        time, the canary is corrupted (naming ``field``) and its sighting gives no latency."""
        seq = self._seq(tag)
        if seq is None or seq >= self.injected:
            return
        where = (field, instant, shown)
        self._columns[stage].placed(seq, stage, self.run.tag(seq), int(self.sent_ms[seq]), where, self.diffs)

    def cannot_observe(self, stage: str, what: str, why: str) -> None:
        """``stage`` cannot observe ``what`` (``retracted``, ``duplicates``): its count there is inconclusive."""
        self.unobservable.setdefault(stage, {}).setdefault(what, why)

    def declare_shards(self, stage: str, shards: Sequence[int]) -> None:
        """The shards ``stage`` has (a topic's partitions): coverage is judged against them."""
        self.shards[stage] = tuple(sorted(shards))

    def declare_ordered(self, stage: str) -> None:
        """The positions ``stage`` records are an order (per shard and key): ordering is judged on them."""
        self.ordered.add(stage)

    # -- what probes may ask ---------------------------------------------------------------------------

    def pending_windows_ms(self, stage: str) -> dict[str, tuple[int, int]]:
        """Per canary symbol, the send-time window ``[first, last]`` (wall ms) of the canaries injected
        but not yet seen at ``stage``."""
        return self._windows(self.pending(stage))

    def run_windows_ms(self) -> dict[str, tuple[int, int]]:
        """Per canary symbol, the send-time window of every canary injected so far."""
        return self._windows(np.arange(self.injected))

    def due(self, stage: str) -> int:
        """Canaries its upstream stage holds that ``stage`` has not shown yet (0 when measured from the
        source: nothing upstream says a canary should be there already)."""
        up = self.route.upstream[stage]
        return 0 if up == SOURCE else max(0, self._reached[up] - self._reached[stage])

    def pending_refs(self, stage: str, at: str) -> tuple[Ints, npt.NDArray[np.int32], Ints]:
        """Canaries not yet seen at ``stage`` but seen at ``at``: their tags, and their shard and position
        there (the consumer-group probe maps tags to committed offsets with these)."""
        pending = self.pending(stage)
        col = self._columns[at]
        located = pending[~np.isnan(col.first[pending])]
        tags = self.run.lo | located.astype(np.int64)
        return tags, col.shard[located], col.position[located]

    # -- reading (engine, summary) ---------------------------------------------------------------------

    def seq_of(self, tag: object) -> int | None:
        """The sequence of ``tag`` if it is an injected canary of this run; counts the others."""
        value = _integer(tag)
        if value is None:
            return None
        seq = self.run.seq_of(value)
        if seq is None:
            if parse(value) is not None:
                self.foreign += 1
            return None
        if seq >= self.injected or math.isnan(self.injected_at[seq]):
            self.unexpected += 1
            return None
        return seq

    def _seq(self, tag: object) -> int | None:
        value = _integer(tag)
        return None if value is None else self.run.seq_of(value)

    def reached(self, stage: str) -> int:
        return self._reached[stage]

    def complete(self, stage: str) -> bool:
        return self._reached[stage] >= self.injected > 0

    def first_seen(self, stage: str) -> Floats:
        """First-seen times at ``stage`` (NaN: not seen), for the injected canaries."""
        if stage == SOURCE:
            return self.injected_at[: self.injected]
        return self._columns[stage].first[: self.injected]

    def copies(self, stage: str) -> npt.NDArray[np.uint32]:
        return self._columns[stage].copies[: self.injected]

    def live(self, stage: str) -> npt.NDArray[np.int32]:
        return self._columns[stage].live[: self.injected]

    def refs(self, stage: str) -> tuple[npt.NDArray[np.int32], Ints]:
        """Shard and position of each injected canary at ``stage`` (-1 where none was recorded)."""
        col = self._columns[stage]
        return col.shard[: self.injected], col.position[: self.injected]

    def source_ms(self, stage: str) -> Floats:
        return self._columns[stage].source_ms[: self.injected]

    def pending(self, stage: str) -> npt.NDArray[np.intp]:
        """Sequences injected but not yet seen at ``stage``."""
        return np.flatnonzero(np.isnan(self._columns[stage].first[: self.injected]))

    def compared_at(self, stage: str) -> npt.NDArray[np.bool_]:
        """Canaries whose fields (or time) ``stage`` compared with what was sent."""
        col = self._columns[stage]
        mask: npt.NDArray[np.bool_] = (col.digest[: self.injected] != 0) | col.checked[: self.injected]
        return mask

    def untimed(self, stage: str) -> npt.NDArray[np.bool_]:
        """Canaries first found at ``stage`` by a look that was not watching for them: no measured time."""
        if stage == SOURCE:
            return np.zeros(self.injected, bool)
        return self._columns[stage].untimed[: self.injected] & ~np.isnan(self.first_seen(stage))

    def retractions(self, stage: str) -> tuple[npt.NDArray[np.uint16], Floats, Floats]:
        """Per canary: how often it went gone from ``stage``'s view after a sighting, since when it is gone
        now (NaN: there), and how long its last completed gone interval lasted (NaN: never restored)."""
        col = self._columns[stage]
        n = self.injected
        return col.gone[:n], col.gone_at[:n], col.restored_after[:n]

    def hop_latencies(self, stage: str, among: npt.NDArray[np.bool_] | None = None) -> Floats:
        """Per canary that reached the upstream stage (of those ``among`` selects): seen at ``stage`` minus
        seen upstream, never below zero (a probe that looks less often may see it upstream later); ``inf``
        where it never got here, NaN where either time was not measured (found by a last sweep)."""
        upstream = self.route.upstream[stage]
        up = self.first_seen(upstream)
        here = self.first_seen(stage)
        hop = np.where(np.isnan(here), np.inf, np.maximum(here - up, 0.0))
        hop[(self.untimed(stage) | self.untimed(upstream)) & ~np.isnan(here)] = np.nan
        keep = ~np.isnan(up) if among is None else ~np.isnan(up) & among
        return hop[keep]

    def latencies_since_injection(self, stage: str) -> Floats:
        """Seen at ``stage`` minus injected; ``inf`` where never seen, NaN where not measured."""
        here = self.first_seen(stage)
        latency = np.where(np.isnan(here), np.inf, here - self.injected_at[: self.injected])
        latency[self.untimed(stage)] = np.nan
        return latency

    def _windows(self, seqs: npt.NDArray[np.intp]) -> dict[str, tuple[int, int]]:
        return send_windows(self.factory.symbols, self.factory.symbol_index[seqs], self.sent_ms[seqs])


def send_windows(symbols: Sequence[str], symbol_index: npt.NDArray[Any], sent_ms: Ints) -> dict[str, tuple[int, int]]:
    """Per symbol, the send-time window ``[first, last]`` (wall ms) of canaries sent on ``symbols[index]``
    at ``sent_ms``."""
    windows: dict[str, tuple[int, int]] = {}
    for index in np.unique(symbol_index):
        mine = sent_ms[symbol_index == index]
        windows[symbols[int(index)]] = (int(mine.min()), int(mine.max()))
    return windows


def _integer(tag: object) -> int | None:
    if isinstance(tag, int) and not isinstance(tag, bool):
        return tag
    try:
        return int(str(tag))
    except ValueError:
        return None
