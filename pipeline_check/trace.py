"""The trace book: per canary, when it was injected and first/last seen at each stage, how many copies
each stage holds, and where its fields differ from what was sent.

Storage is columnar (numpy arrays indexed by sequence), about 120 bytes per canary, so a million-canary
run fits in memory and every statistic is one vectorised pass. Times are monotonic seconds of the run's
:class:`~pipeline_check.clock.Clock`; source-reported times (broker timestamp, snapshot time) are kept
beside them in wall-clock milliseconds, never instead of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline_check.clock import Clock
from pipeline_check.fidelity import compare
from pipeline_check.messages import Trade, TradeFactory
from pipeline_check.sla import MIN_DELIVERY_STEPS, Measurements
from pipeline_check.tags import RunId, parse

SOURCE = "source"
# Where each stage's latency is measured from. The consumer stage (offsets committed by the group) is an
# acknowledgement branching off Kafka: a pipeline may commit before or after it writes the table, so the
# table's latency is measured from Kafka, not from the commit.
UPSTREAM = {"kafka": SOURCE, "consumer": "kafka", "iceberg": "kafka", "api": "iceberg"}
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field of one canary that a stage holds differently from what was injected."""

    stage: str
    tag: int
    field: str
    expected: str
    actual: str


@dataclass(slots=True)
class _StageColumns:
    first: Floats
    last: Floats
    copies: npt.NDArray[np.uint32]
    source_ms: Floats  # source-reported time (broker timestamp, snapshot time), wall-clock ms
    ref: npt.NDArray[np.int64]  # where it was first seen: Kafka offset, Iceberg snapshot id

    @classmethod
    def empty(cls, n: int) -> _StageColumns:
        return cls(
            np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.uint32), np.full(n, np.nan), np.full(n, -1, np.int64)
        )


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's figures for reports."""

    name: str
    reached: int
    duplicated: int
    extra_copies: int
    latency: dict[str, float]  # p50/p95/p99/max of the hop from the upstream stage, seconds
    since_injection: dict[str, float]  # the same, from injection
    source_latency: dict[str, float]  # from injection to the source-reported time, if the stage has one
    upstream: str


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Everything the verdict and the reports need, computed once at the end of a run."""

    run: str
    injected: int
    delivered: int
    stages: list[StageSummary]
    lost: int
    stuck: dict[str, list[str]]  # last stage reached -> tags (labels) that went no further
    duplicates: int
    corrupted: int
    out_of_order: int
    unexpected: int
    throughput: float
    delivery_steps: int  # distinct arrival times at the last stage: the throughput figure's resolution
    offered_rate: float
    injection_seconds: float
    diffs: list[FieldDiff] = field(default_factory=list)


class TraceBook:
    """Observations of one run's canaries at every configured stage."""

    def __init__(self, run: RunId, factory: TradeFactory, stages: Iterable[str], clock: Clock) -> None:
        n = factory.count
        self.run = run
        self.factory = factory
        self.clock = clock
        self.stages = tuple(stages)
        self.capacity = n
        self.injected_at: Floats = np.full(n, np.nan)
        self.sent_ms = np.zeros(n, np.int64)
        self.injected = 0
        self._columns = {stage: _StageColumns.empty(n) for stage in self.stages}
        self._reached = dict.fromkeys(self.stages, 0)
        self.kafka_partition = np.full(n, -1, np.int32)
        self.diffs: dict[int, list[FieldDiff]] = {}
        self.unexpected = 0  # this run's tags the injector never sent
        self.foreign = 0  # other runs' canaries seen on the way

    # -- recording -----------------------------------------------------------------------------------

    def inject(self, seq: int, at: float) -> Trade:
        """Record that canary ``seq`` is being sent now; return it, stamped with the send time."""
        ms = self.clock.wall_ms(at)
        self.injected_at[seq] = at
        self.sent_ms[seq] = ms
        self.injected = max(self.injected, seq + 1)
        return self.factory.canary(seq, ms)

    def seq_of(self, tag: object) -> int | None:
        """The sequence of ``tag`` if it is an injected canary of this run; counts the others."""
        if not isinstance(tag, int):
            try:
                tag = int(str(tag))
            except ValueError:
                return None
        seq = self.run.seq_of(tag)
        if seq is None:
            if parse(tag) is not None:
                self.foreign += 1
            return None
        if seq >= self.injected or math.isnan(self.injected_at[seq]):
            self.unexpected += 1
            return None
        return seq

    def seen(
        self,
        stage: str,
        seq: int,
        at: float,
        *,
        source_ms: float | None = None,
        ref: int | None = None,
        partition: int | None = None,
    ) -> bool:
        """One more copy of ``seq`` at ``stage``; True the first time. ``ref`` says where (offset, snapshot)."""
        col = self._columns[stage]
        col.copies[seq] += 1
        col.last[seq] = at
        if not math.isnan(col.first[seq]):
            return False
        col.first[seq] = at
        if source_ms is not None:
            col.source_ms[seq] = source_ms
        if ref is not None:
            col.ref[seq] = ref
        if partition is not None:
            self.kafka_partition[seq] = partition
        self._reached[stage] += 1
        return True

    def seen_in_view(self, stage: str, counts: Mapping[int, int], at: float) -> int:
        """A query result that holds ``counts[seq]`` copies of each canary; returns how many are new."""
        col = self._columns[stage]
        new = 0
        for seq, copies in counts.items():
            col.copies[seq] = max(int(col.copies[seq]), copies)
            col.last[seq] = at
            if math.isnan(col.first[seq]):
                col.first[seq] = at
                self._reached[stage] += 1
                new += 1
        return new

    def diff(self, stage: str, seq: int, actual: Mapping[str, object], fields: Mapping[str, str]) -> None:
        """Compare a stage's record with what was sent; keep the differing fields."""
        sent = self.factory.canary(seq, int(self.sent_ms[seq])).to_dict()
        for name, exp, act in compare(sent, actual, fields):  # called per canary and stage: no list unless needed
            self.diffs.setdefault(seq, []).append(FieldDiff(stage, self.run.tag(seq), name, exp, act))

    # -- reading ---------------------------------------------------------------------------------------

    def reached(self, stage: str) -> int:
        return self._reached[stage]

    def has_seen(self, stage: str, seq: int) -> bool:
        return not math.isnan(self._columns[stage].first[seq])

    def first_seen(self, stage: str) -> Floats:
        """First-seen times at ``stage`` (NaN: not seen), for the injected canaries."""
        if stage == SOURCE:
            return self.injected_at[: self.injected]
        return self._columns[stage].first[: self.injected]

    def refs(self, stage: str) -> npt.NDArray[np.int64]:
        return self._columns[stage].ref[: self.injected]

    def copies(self, stage: str) -> npt.NDArray[np.uint32]:
        return self._columns[stage].copies[: self.injected]

    def pending(self, stage: str) -> npt.NDArray[np.intp]:
        """Sequences injected but not yet seen at ``stage``."""
        return np.flatnonzero(np.isnan(self._columns[stage].first[: self.injected]))

    def complete(self, stage: str) -> bool:
        return self._reached[stage] >= self.injected > 0

    def upstream(self, stage: str) -> str:
        """The nearest configured stage latency at ``stage`` is measured from."""
        up = UPSTREAM[stage]
        while up != SOURCE and up not in self.stages:
            up = UPSTREAM[up]
        return up

    # -- summary -------------------------------------------------------------------------------------

    def summary(self, offered_rate: float) -> RunSummary:
        """Figures for the verdict; latency ``inf`` marks a canary that never reached the stage."""
        n = self.injected
        last = self.stages[-1]
        delivered_mask = ~np.isnan(self.first_seen(last))
        delivered = int(delivered_mask.sum())

        stages = [self._stage_summary(stage) for stage in self.stages]
        stuck: dict[str, list[str]] = {}
        for seq in np.flatnonzero(~delivered_mask):
            reached = SOURCE
            for stage in self.stages:
                if not math.isnan(self._columns[stage].first[seq]):
                    reached = stage
            stuck.setdefault(reached, []).append(f"{self.run}#{seq}")

        injected = self.injected_at[:n]
        injection_span = float(injected.max() - injected.min()) if n > 1 else 0.0
        arrivals = self.first_seen(last)[delivered_mask]
        throughput, steps = _delivered_rate(injected[delivered_mask], arrivals, injection_span)

        return RunSummary(
            run=str(self.run),
            injected=n,
            delivered=delivered,
            stages=stages,
            lost=n - delivered,
            stuck=stuck,
            duplicates=max((s.extra_copies for s in stages), default=0),
            corrupted=len(self.diffs),
            out_of_order=self._out_of_order(),
            unexpected=self.unexpected,
            throughput=throughput,
            delivery_steps=steps,
            offered_rate=offered_rate,
            injection_seconds=injection_span,
            diffs=[d for diffs in self.diffs.values() for d in diffs],
        )

    def measurements(self, summary: RunSummary, extra_min_samples: int = 0) -> Measurements:
        """The SLA engine's view of this run."""
        latencies = {stage: self.hop_latencies(stage) for stage in self.stages}
        latencies["e2e"] = self.latencies_since_injection(self.stages[-1])
        per_stage = ", ".join(f"{s.name}: {s.extra_copies}" for s in summary.stages)
        stuck = "; ".join(f"{len(tags)} stuck after {stage}" for stage, tags in summary.stuck.items())
        return Measurements(
            latencies=latencies,
            counts={
                "lost": summary.lost,
                "duplicates": summary.duplicates,
                "corrupted": summary.corrupted,
                "out_of_order": summary.out_of_order,
                "delivered": summary.delivered,
            },
            throughput=summary.throughput,
            throughput_samples=summary.delivered,
            delivery_steps=summary.delivery_steps,
            offered_rate=summary.offered_rate,
            injected=summary.injected,
            extra_min_samples=extra_min_samples,
            notes={
                "lost": f"{summary.lost} of {summary.injected} not delivered" + (f" ({stuck})" if stuck else ""),
                "duplicates": f"extra copies per stage: {per_stage}",
                "corrupted": f"{summary.corrupted} canaries with differing fields",
                "throughput": f"offered {summary.offered_rate:g}/s over {summary.injection_seconds:.1f}s; "
                f"arrived at {summary.delivery_steps} distinct times",
            },
        )

    def hop_latencies(self, stage: str) -> Floats:
        """Per canary: first seen at ``stage`` minus first seen upstream; ``inf`` if it got upstream only."""
        up = self.first_seen(self.upstream(stage))
        here = self.first_seen(stage)
        reached_up = ~np.isnan(up)
        hop = np.where(np.isnan(here), np.inf, here - up)
        return hop[reached_up]

    def latencies_since_injection(self, stage: str) -> Floats:
        here = self.first_seen(stage)
        return np.where(np.isnan(here), np.inf, here - self.injected_at[: self.injected])

    def _stage_summary(self, stage: str) -> StageSummary:
        copies = self.copies(stage)
        col = self._columns[stage]
        source = col.source_ms[: self.injected] / 1000 - self.clock.offset - self.injected_at[: self.injected]
        return StageSummary(
            name=stage,
            reached=self._reached[stage],
            duplicated=int((copies > 1).sum()),
            extra_copies=int(np.maximum(copies.astype(np.int64) - 1, 0).sum()),
            latency=_stats(self.hop_latencies(stage)),
            since_injection=_stats(self.latencies_since_injection(stage)),
            source_latency=_stats(source[~np.isnan(source)]),
            upstream=self.upstream(stage),
        )

    def _out_of_order(self) -> int:
        """Canaries that arrived after a later-sent one: by offset within a partition where Kafka is
        probed (the only stage with an order), else by first-seen time at the first stage."""
        n = self.injected
        if "kafka" in self.stages:
            count = 0
            for partition in np.unique(self.kafka_partition[:n]):
                if partition < 0:
                    continue
                offsets = self.refs("kafka")[self.kafka_partition[:n] == partition]
                count += int((offsets < np.maximum.accumulate(offsets)).sum())
            return count
        first = self.first_seen(self.stages[0])
        first = first[~np.isnan(first)]
        return int((first < np.maximum.accumulate(first)).sum()) if len(first) else 0


def _delivered_rate(sent: Floats, arrivals: Floats, injection_span: float) -> tuple[float, int]:
    """Canaries per second delivered, and the number of distinct arrival steps the figure rests on.

    A pipeline that writes in batches delivers in steps. The latest-sent canary of each step is the
    one that caught its batch just in time, so those points trace how far behind the feed the pipeline
    runs: their arrival time against send time has slope 1 for a pipeline that keeps up, whatever the
    batch phase, and offered/capacity for one that falls behind. The slope is Theil-Sen's (the median
    of the pairwise slopes), so one stalled batch in a short run does not read as a slow pipeline while
    a sustained backlog moves every pair. The last step is left out: its latest canary is the last one
    fed, which waits for a batch however fast the pipeline is. The rate is the fed rate over that
    slope, and never above the fed rate."""
    delivered = len(arrivals)
    if delivered < 2 or injection_span <= 0:
        return 0.0, 0
    order = np.argsort(arrivals)
    arrived = arrivals[order]
    starts = np.flatnonzero(np.r_[True, arrived[1:] != arrived[:-1]])
    steps = arrived[starts]
    fed = (delivered - 1) / injection_span
    if len(steps) < MIN_DELIVERY_STEPS:
        return fed, len(steps)
    latest_sent = np.maximum.reduceat(sent[order], starts)
    # canaries injected in one batch share a send time: steps whose latest ones tie are one point
    points = len(np.unique(latest_sent[:-1]))
    if points + 1 < MIN_DELIVERY_STEPS:
        return fed, points + 1
    slope = _theil_sen(latest_sent[:-1], steps[:-1])
    return (fed if slope <= 1 else fed / slope), len(steps)


def _theil_sen(x: Floats, y: Floats, max_points: int = 400) -> float:
    """Median slope over all pairs with distinct ``x`` (two distinct values at least). Evenly thinned
    to ``max_points`` first, which bounds the pair count: a pipeline that delivers one canary at a
    time has a step per canary."""
    if len(x) > max_points:
        keep = np.linspace(0, len(x) - 1, max_points).astype(np.intp)
        x, y = x[keep], y[keep]
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    distinct = dx != 0
    return float(np.median((y[j] - y[i])[distinct] / dx[distinct]))


def _stats(samples: Floats) -> dict[str, float]:
    """p50/p95/p99/max of the finite samples (empty when none)."""
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return {}
    p50, p95, p99 = np.percentile(finite, [50, 95, 99], method="inverted_cdf")
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(finite.max()), "n": len(finite)}
