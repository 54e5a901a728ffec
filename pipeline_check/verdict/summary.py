"""A run's figures, computed once from the trace book when it ends: per stage, end to end, what was
lost and where it got stuck, copies, retractions, coverage of partitions, ordering, throughput; and the
SLA engine's view of them (:class:`~pipeline_check.verdict.thresholds.Measurements`).

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
from pipeline_check.faults.steps import FaultWindow
from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.thresholds import (
    MIN_RECOVERY_CANARIES,
    WINDOWS,
    Measurements,
    Recovery,
    Tally,
    ThroughputFigures,
    latency_stats,
)
from pipeline_check.verdict.throughput import delivered_rate


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


@dataclass(frozen=True, slots=True)
class InjectionStats:
    """What the injector achieved against what was asked of it."""

    sent: int
    background: int
    offered_rate: float
    achieved_rate: float
    lateness_p99: float  # seconds a send started after its scheduled time
    pauses: int  # times the source waited for a subscriber or skipped ahead

    @property
    def limited(self) -> str | None:
        """Why the validator, not the pipeline, set the pace (None when it kept its schedule): it paused,
        i.e. fell so far behind (a subscriber reconnecting, a stalled broker) that it skipped ahead. A
        rate below the one asked is no reason by itself: delivery is judged against the rate achieved."""
        if self.pauses:
            return f"injection paused {self.pauses} times (a subscriber reconnecting, a stalled broker)"
        return None


@dataclass(frozen=True, slots=True)
class FaultSummary:
    """One fault of the run, its window in seconds from the first injection."""

    label: str
    action: str
    target: str
    start_s: float
    end_s: float  # NaN: never undone (the run ended first)
    output: str


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


def measurements(
    summary: RunSummary,
    book: TraceBook,
    extra_min_samples: int = 0,
    *,
    faults: Collection[FaultWindow] = (),
    freshness_limit: float = 30.0,
) -> Measurements:
    """The SLA engine's view of a run; ``freshness_limit`` is the e2e latency a canary must meet for the
    pipeline to count as recovered after a fault."""
    s = summary
    latencies = {stage: book.hop_latencies(stage) for stage in book.stages}
    latencies["e2e"] = book.latencies_since_injection(s.final)
    for name, mask in window_masks(book, faults).items():
        latencies[f"e2e[{name}]"] = latencies["e2e"][mask]
        for stage in book.stages:
            latencies[f"{stage}[{name}]"] = book.hop_latencies(stage, among=mask)
    stuck = "; ".join(f"{len(tags)} stuck after {stage}" for stage, tags in s.stuck.items())
    per_stage = ", ".join(f"{st.name}: {st.extra_copies}" for st in s.stages)
    incomplete_detail = ", ".join(
        f"{name}: {s.delivered - count:,} of {s.delivered:,} {_seen_verb(name)}" for name, count in s.incomplete.items()
    )
    tallies = {
        "lost": Tally(s.lost, s.injected, f"{s.lost} of {s.injected} not delivered" + (f" ({stuck})" if stuck else "")),
        "duplicates": Tally(s.duplicates, s.delivered, f"extra copies per stage: {per_stage}"),
        "corrupted": Tally(
            s.corrupted,
            s.delivered,
            f"{s.corrupted} canaries with differing fields",
            inconclusive=None
            if s.compared
            else "no stage compares fields (set `fields` on a stage): nothing was compared",
        ),
        "retracted": Tally(
            s.retracted,
            s.delivered,
            "seen, then gone, per stage: " + ", ".join(f"{st.name}: {st.retracted}" for st in s.stages),
        ),
        "incomplete": Tally(
            s.incomplete_canaries,
            s.delivered,
            incomplete_detail or "no stage before the last one",
            not_applicable=None if s.incomplete else f"only one stage ({s.final}) is probed",
        ),
        "out_of_order": Tally(
            s.out_of_order or 0,
            s.delivered,
            f"judged at {s.order_stage}",
            not_applicable=None
            if s.out_of_order is not None
            else "no probed stage shows an order the validator did not make itself (its own producer's offsets); "
            "name an ordering column (stages.iceberg.order_column, stages.api.order_field)",
        ),
        "delivered": Tally(s.delivered, s.injected, f"{s.delivered} of {s.injected} delivered at {s.final}"),
    }
    return Measurements(
        latencies=latencies,
        tallies=tallies,
        throughput=s.throughput,
        coverage=_coverage_tally(s),
        injected=s.injected,
        extra_min_samples=extra_min_samples,
        recovery=recovery(book, faults, freshness_limit) if faults else None,
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


def recovery(book: TraceBook, faults: Collection[FaultWindow], limit: float) -> Recovery:
    """Per fault, seconds from its end to the first canary sent after it (before the next fault) that
    met ``limit``, every later one meeting it too; the slowest of them."""
    sent = book.first_seen(SOURCE)
    e2e = book.latencies_since_injection(book.route.final)
    windows = sorted(faults, key=lambda w: w.start)
    worst, parts = 0.0, []
    for i, w in enumerate(windows):
        if math.isnan(w.end):
            return Recovery(math.inf, f"{w.label} was never undone", None)
        until = windows[i + 1].start if i + 1 < len(windows) else np.inf
        after = (sent > w.end) & (sent < until)
        if after.sum() < MIN_RECOVERY_CANARIES:
            return Recovery(
                math.nan,
                "",
                f"{int(after.sum())} canaries sent after {w.label} ended (need {MIN_RECOVERY_CANARIES}): "
                "inject for longer after the fault",
            )
        order = np.argsort(sent[after])
        times, late = sent[after][order], e2e[after][order] > limit
        bad = np.flatnonzero(late)
        first_good = int(bad[-1]) + 1 if len(bad) else 0
        seconds = math.inf if first_good == len(late) else max(0.0, float(times[first_good] - w.end))
        worst = max(worst, seconds)
        shown = "never" if math.isinf(seconds) else f"{seconds:.1f}s"
        parts.append(f"{w.label}: {shown}")
    return Recovery(worst, f"fresh again (e2e <= {limit:g}s for every canary from then on) after " + "; ".join(parts))


def _fault(book: TraceBook, w: FaultWindow) -> FaultSummary:
    t0 = float(np.nanmin(book.first_seen(SOURCE))) if book.injected else w.start
    return FaultSummary(w.label, w.action, w.target, w.start - t0, w.end - t0, w.output)


def _seen_verb(stage: str) -> str:
    return "committed" if stage == "consumer" else f"seen at {stage}"


def _coverage_tally(s: RunSummary) -> Tally:
    sharded = [st for st in s.stages if st.shards]
    if not sharded:
        return Tally(0, 0, "", not_applicable="no probed stage has partitions")
    empty = [(st.name, c.shard) for st in sharded for c in st.shards if c.seen == 0]
    total = sum(len(st.shards) for st in sharded)
    parts = "; ".join(
        f"{st.name}: " + ", ".join(f"p{c.shard} {c.seen} seen/{c.delivered} delivered" for c in st.shards)
        for st in sharded
    )
    if empty:
        names = ", ".join(f"{stage} partition {shard}" for stage, shard in empty)
        why = "; canaries never reached them: does the pipeline key records by something else than the symbol?"
        return Tally(len(empty), total, f"no canary in {names}{why} ({parts})")
    return Tally(0, total, parts)


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
