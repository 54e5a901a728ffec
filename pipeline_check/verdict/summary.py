"""A run's figures, computed once from the trace book when it ends: per stage, end to end, what was
lost and where it got stuck, copies, retractions, coverage of partitions, ordering, throughput, the faults'
windows. The checks' view of them is :mod:`pipeline_check.verdict.measurements`.

Every figure counts canaries exactly as the checks do: an undelivered canary is an infinitely late one
in every latency percentile, so no figure contradicts its check.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline_check.canary.fidelity import FieldDiff
from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.statistics import latency_stats
from pipeline_check.verdict.thresholds import WINDOWS
from pipeline_check.verdict.throughput import ThroughputFigures, delivered_rate


@dataclass(frozen=True, slots=True)
class ShardCoverage:
    """One shard (partition) of a stage: canaries seen there, and how many of them were delivered."""

    shard: int
    seen: int
    delivered: int


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's figures for reports."""

    name: str
    upstream: str
    reached: int
    duplicated: int  # canaries with more than one copy at once (a view) or in all (a stream)
    extra_copies: int
    retracted: int  # seen, then gone from the stage's view
    incomplete: int  # delivered at the last stage but never seen here
    latency: dict[str, float]  # hop from the upstream stage: p50/p95/p99/max/n, inf = never arrived
    since_injection: dict[str, float]
    source_latency: dict[str, float]  # from injection to the source-reported time, where there is one
    shards: list[ShardCoverage] = field(default_factory=list)


SHORT_OF = 0.9  # background load below this share of the rate asked did not test the pipeline at that rate


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """One load agent's share of the background (Trogdor: one ProduceBench task)."""

    agent: str
    target_rate: float
    sent: int | None  # None: it never reported a count
    error: str = ""


@dataclass(frozen=True, slots=True)
class BackgroundLoad:
    """The background trades a run sent beside its canaries, by the engine that sent them (``local``: the
    validator's own process, interleaved with the canaries; ``trogdor``: Trogdor's agents)."""

    engine: str
    asked_rate: float
    achieved_rate: float | None  # None: unknown (an agent never reported)
    sent: int | None
    seconds: float
    agents: tuple[AgentLoad, ...] = ()
    detail: str = ""  # how the engine made the records, where it differs from the asked

    @property
    def short(self) -> str | None:
        """Why the pipeline was not tested at the background rate asked (None when it was)."""
        if self.asked_rate <= 0:
            return None
        asked = f"{self.asked_rate:,.0f}/s asked"
        if self.achieved_rate is None:
            return f"{self.engine} background load unknown ({asked}): the pipeline may not have been tested at it"
        if self.achieved_rate < SHORT_OF * self.asked_rate:
            share = 100 * self.achieved_rate / self.asked_rate
            return (
                f"{self.engine} background load reached {self.achieved_rate:,.0f}/s of {asked} ({share:.0f}%): "
                "the pipeline was not tested at the rate asked"
            )
        return None


@dataclass(frozen=True, slots=True)
class InjectionStats:
    """What the injector achieved against what was asked of it."""

    sent: int
    background: int
    offered_rate: float
    achieved_rate: float
    lateness_p99: float  # seconds a send started after its scheduled time
    pauses: int  # times the source waited for a subscriber or skipped ahead
    background_load: BackgroundLoad | None = None  # None: no background asked

    @property
    def limited(self) -> str | None:
        """Why the validator, not the pipeline, set the pace (None when it kept its schedule): it paused,
        i.e. fell so far behind (a subscriber reconnecting, a stalled broker) that it skipped ahead, or its
        background load fell short of the rate asked. A canary rate below the one asked is no reason by
        itself: delivery is judged against the rate achieved."""
        reasons = []
        if self.pauses:
            reasons.append(f"injection paused {self.pauses} times (a subscriber reconnecting, a stalled broker)")
        if self.background_load is not None and self.background_load.short:
            reasons.append(self.background_load.short)
        return "; ".join(reasons) or None


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Who led one partition and which of its replicas were in sync, at one moment (Kafka node ids)."""

    leader: int  # -1: no leader
    isr: tuple[int, ...]
    replicas: tuple[int, ...]


# moment ("before", "during", "after" a fault) -> "topic/partition" -> its state
Leadership = dict[str, dict[str, PartitionState]]


@dataclass(slots=True)
class FaultWindow:
    """When one fault held: from applied to undone (monotonic seconds; ``end`` NaN while it holds).
    A fault on Kafka brokers also says which services its target named when it was applied and the
    leaders and in-sync replicas of the watched partitions before, during and after it."""

    label: str
    action: str
    target: str
    start: float
    end: float = math.nan
    output: str = ""
    services: tuple[str, ...] = ()
    brokers: dict[int, str] = field(default_factory=dict)  # node id -> service
    partitions: Leadership = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaultSummary:
    """One fault of the run, its window in seconds from the first injection."""

    label: str
    action: str
    target: str
    start_s: float
    end_s: float  # NaN: never undone (the run ended first)
    output: str
    services: tuple[str, ...] = ()
    brokers: dict[int, str] = field(default_factory=dict)
    partitions: Leadership = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Everything the verdict and the reports need, computed once at the end of a run."""

    run: str
    injected: int
    delivered: int
    final: str  # the stage freshness is measured at
    stages: list[StageSummary]
    e2e: dict[str, float]  # latency since injection at the final stage, inf = never delivered
    lost: int
    stuck: dict[str, list[str]]  # last stage reached -> tags (labels) that went no further
    duplicates: int
    corrupted: int
    compared: bool  # some stage compared fields (without, "0 corrupted" means nothing)
    retracted: int
    incomplete: dict[str, int]  # per stage before the final one
    incomplete_canaries: int  # delivered canaries missing at one stage before the final one or more
    out_of_order: int | None  # None: no stage shows an order the validator did not make itself
    order_stage: str | None
    unexpected: int
    foreign: int
    throughput: ThroughputFigures
    injection: InjectionStats
    settle_s: float
    diffs: list[FieldDiff] = field(default_factory=list)
    faults: list[FaultSummary] = field(default_factory=list)
    # e2e latency before, during and after the faults (by send time); empty without faults
    windows: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def stage(self) -> dict[str, StageSummary]:
        return {s.name: s for s in self.stages}


def summarise(
    book: TraceBook,
    injection: InjectionStats,
    *,
    settle_s: float,
    validator_ordered: Collection[str] = (),
    faults: Collection[FaultWindow] = (),
) -> RunSummary:
    """The run's figures; ``validator_ordered`` names stages whose order the validator itself made (its
    own producer's offsets), which cannot show the pipeline's ordering; ``faults`` the scenario's windows."""
    n = book.injected
    route = book.route
    delivered_mask = ~np.isnan(book.first_seen(route.final))
    delivered = int(delivered_mask.sum())
    stages = [_stage(book, stage, delivered_mask) for stage in route.stages]
    stuck: dict[str, list[str]] = {}
    for seq in np.flatnonzero(~delivered_mask):
        reached = SOURCE
        for stage in route.stages:
            if not math.isnan(book.first_seen(stage)[seq]):
                reached = stage
        stuck.setdefault(reached, []).append(f"{book.run}#{seq}")
    sent = book.first_seen(SOURCE)
    estimate = delivered_rate(sent[delivered_mask], book.first_seen(route.final)[delivered_mask])
    duplicated = np.zeros(n, bool)
    retracted = np.zeros(n, bool)
    skipped = np.zeros(n, bool)
    for stage in route.stages:
        duplicated |= book.copies(stage) > 1
        retracted |= _retracted(book, stage)
        if stage != route.final:
            skipped |= delivered_mask & np.isnan(book.first_seen(stage))
    order_stage = _order_stage(book, validator_ordered)
    return RunSummary(
        run=str(book.run),
        injected=n,
        delivered=delivered,
        final=route.final,
        stages=stages,
        e2e=latency_stats(book.latencies_since_injection(route.final)),
        lost=n - delivered,
        stuck=stuck,
        duplicates=int(duplicated.sum()),
        corrupted=len(book.diffs),
        compared=book.compared > 0,
        retracted=int(retracted.sum()),
        incomplete={s.name: s.incomplete for s in stages if s.name != route.final},
        incomplete_canaries=int(skipped.sum()),
        out_of_order=None if order_stage is None else _out_of_order(book, order_stage),
        order_stage=order_stage,
        unexpected=book.unexpected,
        foreign=book.foreign,
        throughput=ThroughputFigures(
            delivered=estimate.rate,
            tail=estimate.tail,
            injected_rate=estimate.injected_rate,
            steps=estimate.steps,
            detail=f"{delivered} canaries delivered in {estimate.steps} distinct arrival steps "
            f"(batch interval {estimate.interval:.2f}s, longest gap {estimate.longest_gap:.2f}s); "
            f"injected at {estimate.injected_rate:.1f}/s",
            limited=injection.limited,
            span=estimate.span,
            interval=estimate.interval,
            tail_upper=estimate.tail_upper,
        ),
        injection=injection,
        settle_s=settle_s,
        diffs=[d for diffs in book.diffs.values() for d in diffs],
        faults=[_fault(book, w) for w in faults],
        windows={
            name: latency_stats(book.latencies_since_injection(route.final)[mask])
            for name, mask in window_masks(book, faults).items()
        },
    )


def window_masks(book: TraceBook, faults: Collection[FaultWindow]) -> dict[str, npt.NDArray[np.bool_]]:
    """Canaries sent before the first fault, during any, after the last (empty without faults)."""
    if not faults:
        return {}
    sent = book.first_seen(SOURCE)
    during = np.zeros(len(sent), bool)
    for w in faults:
        during |= (sent >= w.start) & (sent <= (np.inf if math.isnan(w.end) else w.end))
    ends = [np.inf if math.isnan(w.end) else w.end for w in faults]
    masks = {"before": sent < min(w.start for w in faults), "during": during, "after": sent > max(ends)}
    return {name: masks[name] for name in WINDOWS}


def _fault(book: TraceBook, w: FaultWindow) -> FaultSummary:
    t0 = float(np.nanmin(book.first_seen(SOURCE))) if book.injected else w.start
    return FaultSummary(
        w.label, w.action, w.target, w.start - t0, w.end - t0, w.output, w.services, w.brokers, w.partitions
    )


def _stage(book: TraceBook, stage: str, delivered: np.ndarray) -> StageSummary:
    copies = book.copies(stage)
    first = book.first_seen(stage)
    source = book.source_ms(stage) / 1000 - book.clock.offset - book.first_seen(SOURCE)
    shards: list[ShardCoverage] = []
    if stage in book.shards:
        shard_of, _ = book.refs(stage)
        seen = ~np.isnan(first)
        for shard in book.shards[stage]:
            mine = seen & (shard_of == shard)
            shards.append(ShardCoverage(shard, int(mine.sum()), int((mine & delivered).sum())))
    return StageSummary(
        name=stage,
        upstream=book.route.upstream[stage],
        reached=book.reached(stage),
        duplicated=int((copies > 1).sum()),
        extra_copies=int(np.maximum(copies.astype(np.int64) - 1, 0).sum()),
        retracted=int(_retracted(book, stage).sum()),
        incomplete=int((delivered & np.isnan(first)).sum()),
        latency=latency_stats(book.hop_latencies(stage)),
        since_injection=latency_stats(book.latencies_since_injection(stage)),
        source_latency=latency_stats(source[~np.isnan(source)]),
        shards=shards,
    )


def _retracted(book: TraceBook, stage: str) -> npt.NDArray[np.bool_]:
    retracted: npt.NDArray[np.bool_] = (~np.isnan(book.first_seen(stage))) & (book.live(stage) == 0)
    return retracted


def _order_stage(book: TraceBook, validator_ordered: Collection[str]) -> str | None:
    """The first stage whose positions show an order the pipeline made."""
    for stage in book.route.stages:
        if stage in book.ordered and stage not in validator_ordered:
            return stage
    return None


def _out_of_order(book: TraceBook, stage: str) -> int:
    """Canaries placed before one sent earlier on the same shard and key: in send order (sequence
    order), a position below the highest one so far."""
    shard, position = book.refs(stage)
    located = position >= 0
    group = shard.astype(np.int64) * 256 + book.factory.symbol_index[: book.injected]
    count = 0
    for key in np.unique(group[located]):
        mine = position[located & (group == key)]
        count += int((mine < np.maximum.accumulate(mine)).sum())
    return count
