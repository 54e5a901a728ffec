"""A run's figures, computed once from the trace book when it ends: per stage, end to end, what was
lost and where it got stuck, copies, corrupted versions, retractions (restored or not), coverage of
partitions, ordering at every ordered stage, throughput, the faults' windows. The checks' view of them is
:mod:`pipeline_check.verdict.measurements`.

Every figure counts canaries exactly as the checks do: an undelivered canary is an infinitely late one
in every latency percentile, a canary found only by a last sweep has no measured latency (``unmeasured``),
so no figure contradicts its check. Each latency figure carries its resolution: how often the probes it
rests on looked.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipeline_check.canary.fidelity import FieldDiff
from pipeline_check.trace.book import Ints, TraceBook
from pipeline_check.trace.stages import SOURCE, Route
from pipeline_check.verdict.statistics import latency_stats
from pipeline_check.verdict.thresholds import WINDOWS
from pipeline_check.verdict.throughput import Estimate, ThroughputFigures, delivered_rate, judged_rate


@dataclass(frozen=True, slots=True)
class ShardCoverage:
    """One shard (partition) of a stage: canaries seen there, and how many of them were delivered."""

    shard: int
    seen: int
    delivered: int


@dataclass(frozen=True, slots=True)
class Retraction:
    """A canary row that went gone from a stage's view after it was seen: how often, and for how long its
    last absence lasted (None: still gone at the end)."""

    stage: str
    tag: int
    times: int
    restored_after_s: float | None

    @property
    def text(self) -> str:
        """``retracted, restored after 3.1s`` / ``retracted twice, still gone``."""
        how = "retracted" if self.times == 1 else f"retracted {self.times} times"
        if self.restored_after_s is None:
            return f"{how}, still gone"
        return f"{how}, restored after {self.restored_after_s:.1f}s"


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's figures for reports."""

    name: str
    upstream: str
    reached: int
    duplicated: int  # canaries with more than one copy at once (a view) or in all (a stream)
    extra_copies: int
    retracted: int  # seen, then gone from the stage's view at some point (restored or not)
    incomplete: int  # delivered at the last stage but never seen here
    latency: dict[str, float]  # hop from the upstream stage: p50/p95/p99/max/n, inf = never arrived
    since_injection: dict[str, float]
    source_latency: dict[str, float]  # from injection to the source-reported time, where there is one
    shards: list[ShardCoverage] = field(default_factory=list)
    restored: int = 0  # of the retracted, back in the view at the end
    compared: int = 0  # canaries whose fields (or time) this stage compared with what was sent
    corrupted: int = 0  # of them, with a field that differs (in any version)
    out_of_order: int | None = None  # None: the stage declares no order (or the validator made it)
    resolution_s: float = 0.0  # a hop latency here is known to within this (the probes' looks, both ends)
    unobservable: dict[str, str] = field(default_factory=dict)  # count name -> why this stage cannot see it


KEPT_PACE = 0.9  # an injection that achieved less than this share of its rate fell behind its schedule


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
        """Why the validator, not the pipeline, set the pace (None when it kept its schedule): it fell
        behind its own schedule, pausing (so far behind, a subscriber reconnecting or a stalled broker, that
        it skipped ahead) or sending at less than ``KEPT_PACE`` of the rate asked, or its background load fell
        short of the rate asked."""
        reasons = []
        if self.pauses:
            reasons.append(f"injection paused {self.pauses} times (a subscriber reconnecting, a stalled broker)")
        elif self.sent > 1 and self.achieved_rate < KEPT_PACE * self.offered_rate:
            reasons.append(
                f"injection fell behind its schedule: {self.achieved_rate:.1f}/s achieved of the "
                f"{self.offered_rate:g}/s asked (give the validator more CPU, or ask a lower rate)"
            )
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
    order_stages: list[str]  # the stages ordering is judged at
    unexpected: int
    foreign: int
    throughput: ThroughputFigures
    injection: InjectionStats
    settle_s: float
    diffs: list[FieldDiff] = field(default_factory=list)
    faults: list[FaultSummary] = field(default_factory=list)
    # e2e latency before, during and after the faults (by send time); empty without faults
    windows: dict[str, dict[str, float]] = field(default_factory=dict)
    seen: int = 0  # canaries seen at some stage (what duplicates and retractions are out of)
    compared_canaries: int = 0  # canaries some stage compared (what corrupted is out of)
    ordered_canaries: int = 0  # canaries placed at an ordered stage (what out_of_order is out of)
    retractions: list[Retraction] = field(default_factory=list)
    e2e_resolution_s: float = 0.0  # e2e latencies are known to within this (the final probe's looks)

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
    resolution: Mapping[str, float] | None = None,
) -> RunSummary:
    """The run's figures; ``validator_ordered`` names stages whose order the validator itself made (its
    own producer's offsets), which cannot show the pipeline's ordering; ``faults`` the scenario's windows;
    ``resolution`` each probe's (seconds between its looks)."""
    n = book.injected
    route = book.route
    looks = hop_resolutions(route, resolution or {})
    delivered_mask = ~np.isnan(book.first_seen(route.final))
    delivered = int(delivered_mask.sum())
    order = {stage: _out_of_order(book, stage, validator_ordered) for stage in _order_stages(book, validator_ordered)}
    stages = [_stage(book, stage, delivered_mask, looks[stage], order.get(stage)) for stage in route.stages]
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
    seen = np.zeros(n, bool)
    compared = np.zeros(n, bool)
    for stage in route.stages:
        seen |= ~np.isnan(book.first_seen(stage))
        compared |= book.compared_at(stage)
        duplicated |= book.copies(stage) > 1
        retracted |= book.retractions(stage)[0] > 0
        if stage != route.final:
            skipped |= delivered_mask & np.isnan(book.first_seen(stage))
    out_of_order = np.zeros(n, bool)
    for mask in order.values():
        out_of_order |= mask
    located = np.zeros(n, bool)
    for stage in order:
        located |= _order_keys(book, stage, validator_ordered) >= 0
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
        compared=bool(compared.any()),
        retracted=int(retracted.sum()),
        incomplete={s.name: s.incomplete for s in stages if s.name != route.final},
        incomplete_canaries=int(skipped.sum()),
        out_of_order=int(out_of_order.sum()) if order else None,
        order_stages=list(order),
        unexpected=book.unexpected,
        foreign=book.foreign,
        throughput=_throughput(injection, estimate, delivered),
        injection=injection,
        settle_s=settle_s,
        diffs=[d for diffs in book.diffs.values() for d in diffs],
        faults=[_fault(book, w) for w in faults],
        windows={
            name: latency_stats(book.latencies_since_injection(route.final)[mask])
            for name, mask in window_masks(book, faults).items()
        },
        seen=int(seen.sum()),
        compared_canaries=int(compared.sum()),
        ordered_canaries=int(located.sum()),
        retractions=[r for stage in route.stages for r in _retractions(book, stage)],
        e2e_resolution_s=(resolution or {}).get(route.final, 0.0),
    )


def hop_resolutions(route: Route, resolution: Mapping[str, float]) -> dict[str, float]:
    """Per stage, how far a hop latency there may be off: the sum of the intervals between the looks of
    its own probe and of its upstream stage's (each sees a canary up to one interval late); the source's
    times are the validator's own, exact."""
    return {
        stage: resolution.get(stage, 0.0) + (0.0 if up == SOURCE else resolution.get(up, 0.0))
        for stage, up in route.upstream.items()
    }


def _throughput(injection: InjectionStats, estimate: Estimate, delivered: int) -> ThroughputFigures:
    """The delivered rate (:func:`judged_rate`: the one figure) against what the injector achieved over
    every canary it sent."""
    return ThroughputFigures(
        delivered=judged_rate(estimate.rate, estimate.tail_upper),
        tail=estimate.tail,
        injected_rate=injection.achieved_rate,
        steps=estimate.steps,
        detail=f"{delivered} of {injection.sent} canaries delivered in {estimate.steps} distinct arrival steps "
        f"(batch interval {estimate.interval:.2f}s, longest gap {estimate.longest_gap:.2f}s); "
        f"whole run {estimate.rate:.1f}/s; injected at {injection.achieved_rate:.1f}/s "
        f"(all {injection.sent} canaries sent)",
        limited=injection.limited,
        span=estimate.span,
        interval=estimate.interval,
        tail_upper=estimate.tail_upper,
        whole=estimate.rate,
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


def _stage(
    book: TraceBook, stage: str, delivered: np.ndarray, resolution: float, out_of_order: np.ndarray | None
) -> StageSummary:
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
    gone, gone_at, _ = book.retractions(stage)
    retracted = gone > 0
    corrupted = {seq for seq, diffs in book.diffs.items() if any(d.stage == stage for d in diffs)}
    return StageSummary(
        name=stage,
        upstream=book.route.upstream[stage],
        reached=book.reached(stage),
        duplicated=int((copies > 1).sum()),
        extra_copies=int(np.maximum(copies.astype(np.int64) - 1, 0).sum()),
        retracted=int(retracted.sum()),
        incomplete=int((delivered & np.isnan(first)).sum()),
        latency=latency_stats(book.hop_latencies(stage)),
        since_injection=latency_stats(book.latencies_since_injection(stage)),
        source_latency=latency_stats(source[~np.isnan(source)]),
        shards=shards,
        restored=int((retracted & np.isnan(gone_at)).sum()),
        compared=int(book.compared_at(stage).sum()),
        corrupted=len(corrupted),
        out_of_order=None if out_of_order is None else int(out_of_order.sum()),
        resolution_s=resolution,
        unobservable=dict(book.unobservable.get(stage, {})),
    )


def _retractions(book: TraceBook, stage: str) -> list[Retraction]:
    gone, gone_at, restored_after = book.retractions(stage)
    return [
        Retraction(
            stage,
            book.run.tag(int(seq)),
            int(gone[seq]),
            None if not math.isnan(gone_at[seq]) else float(restored_after[seq]),
        )
        for seq in np.flatnonzero(gone > 0)
    ]


def _order_stages(book: TraceBook, validator_ordered: Collection[str]) -> list[str]:
    """Every stage whose positions show an order the pipeline made."""
    return [stage for stage in book.route.stages if stage in book.ordered and stage not in validator_ordered]


def _order_keys(book: TraceBook, stage: str, validator_ordered: Collection[str]) -> Ints:
    """Per canary, the group its order at ``stage`` is judged in (-1: not judged): the source partition it
    rode (the stage's own shard, else the one recorded at the nearest stage upstream that has shards) and
    its key (symbol). Where the validator spread the canaries over partitions itself and no stage says
    which partition a canary rode, it is not judged: one key spans several partitions, and order holds
    only within one."""
    shard, position = book.refs(stage)
    source = shard.astype(np.int64)
    up = book.route.upstream[stage]
    spread = stage in validator_ordered
    while up != SOURCE:
        up_shard, _ = book.refs(up)
        missing = source < 0
        source[missing] = up_shard[missing]
        spread |= up in validator_ordered
        up = book.route.upstream[up]
    keys = (np.maximum(source, -1) + 1) * 65_536 + book.factory.symbol_index[: book.injected].astype(np.int64)
    unjudged = position < 0
    if spread:
        unjudged |= source < 0
    keys[unjudged] = -1
    return keys


def _out_of_order(book: TraceBook, stage: str, validator_ordered: Collection[str]) -> npt.NDArray[np.bool_]:
    """Canaries placed at ``stage`` before one sent earlier in the same group (source partition and key):
    in send order (sequence order), a position below the highest one so far."""
    _, position = book.refs(stage)
    keys = _order_keys(book, stage, validator_ordered)
    late = np.zeros(book.injected, bool)
    for key in np.unique(keys[keys >= 0]):
        mine = np.flatnonzero(keys == key)
        late[mine] = position[mine] < np.maximum.accumulate(position[mine])
    return late
