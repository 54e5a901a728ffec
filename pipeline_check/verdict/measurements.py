"""What the checks judge: latency samples per series, tallies of canaries with a property (each with its
detection power), throughput, coverage and recovery (:class:`Measurements`), and the samples of a sampled
series (:class:`Series`). The run's figures become measurements in :mod:`pipeline_check.verdict.summary`'s
terms through :func:`measurements`."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.detection_power import CONFIDENCE, upper_bound
from pipeline_check.verdict.statistics import Floats
from pipeline_check.verdict.summary import FaultWindow, RunSummary, window_masks
from pipeline_check.verdict.throughput import ThroughputFigures

MIN_RECOVERY_CANARIES = 10  # canaries sent after a fault before recovery can be told


@dataclass(frozen=True, slots=True)
class Tally:
    """Canaries with a property (lost, duplicated...) out of those that could have it, and why the
    count cannot be judged when it cannot (``inconclusive``: observed too little; ``not_applicable``:
    this configuration cannot observe it)."""

    count: int
    out_of: int
    detail: str
    inconclusive: str | None = None
    not_applicable: str | None = None

    @property
    def bound(self) -> float:
        """One-sided 95 % upper bound on the rate, in % (100 when nothing was observed)."""
        return 100 * upper_bound(self.count, self.out_of, CONFIDENCE)

    def power(self, what: str) -> str:
        """``0 of 1,000 lost: loss rate < 0.30% (95%)``."""
        if self.out_of == 0:
            return f"no canary to judge {what} on"
        return f"{self.count:,} of {self.out_of:,} {what}: rate < {self.bound:.2f}% (95%)"


@dataclass(frozen=True, slots=True)
class Series:
    """Samples of one sampled series (seconds; records for ``lag_records``), what they are, and why the
    series cannot be judged when it cannot (an idle pipeline, every sample failed)."""

    samples: Floats
    detail: str = ""
    inconclusive: str | None = None
    # what to change for more samples
    more: str = "sample for longer (passive.window) or more often (passive.interval)"


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the SLA engine judges: latency samples per series (``e2e`` and stage names; ``inf`` = not
    delivered), tallies by count name, throughput and coverage."""

    latencies: Mapping[str, Floats]
    tallies: Mapping[str, Tally]
    throughput: ThroughputFigures
    coverage: Tally  # shards (partitions) with no canary, out of the shards declared
    injected: int
    extra_min_samples: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)
    recovery: Recovery | None = None  # None: the scenario has no faults
    series: Mapping[str, Series] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recovery:
    """How long after its end each fault the pipeline was fresh again for good: seconds from the fault's
    end to the first canary sent after it that met the freshness limit, every later one meeting it too
    (``inf``: it never did). ``inconclusive``: too few canaries sent after some fault."""

    seconds: float
    detail: str
    inconclusive: str | None = None


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


def recovery(book: TraceBook, faults: Collection[FaultWindow], limit: float) -> Recovery:
    """Per fault, seconds from its end to the first canary sent after it (before the next fault) that
    met ``limit``, every later one meeting it too; the slowest of them. A fault that ended while another
    still held is recovered from with that one."""
    sent = book.first_seen(SOURCE)
    e2e = book.latencies_since_injection(book.route.final)
    windows = sorted(faults, key=lambda w: w.start)
    worst, parts = 0.0, []
    for w in windows:
        if math.isnan(w.end):
            return Recovery(math.inf, f"{w.label} was never undone", None)
        if any(o is not w and o.start <= w.end < o.end for o in windows):
            continue  # it ended while another held: recovery counts from the end of that one
        until = min((o.start for o in windows if o.start > w.end), default=np.inf)
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
