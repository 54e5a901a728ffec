"""What the checks judge: latency samples per series, tallies of canaries with a property (each with its
detection power), throughput, coverage and recovery (:class:`Measurements`), and the samples of a sampled
series (:class:`Series`). The run's figures become measurements in :mod:`pipeline_check.verdict.summary`'s
terms through :func:`measurements`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.detection_power import CONFIDENCE, upper_bound
from pipeline_check.verdict.statistics import Floats
from pipeline_check.verdict.summary import FaultWindow, RunSummary, StageSummary, hop_resolutions, window_masks
from pipeline_check.verdict.throughput import ThroughputFigures

MIN_RECOVERY_CANARIES = 10  # canaries sent after a fault before recovery can be told


@dataclass(frozen=True, slots=True)
class Tally:
    """Canaries with a property (``verb``: lost, duplicated...) out of those that could have it (the
    ``population``: injected, seen, compared...), and why the count cannot be judged when it cannot
    (``inconclusive``: observed too little; ``not_applicable``: this configuration cannot observe it)."""

    count: int
    out_of: int
    detail: str
    inconclusive: str | None = None
    not_applicable: str | None = None
    verb: str = ""
    population: str = "canaries"

    @property
    def bound(self) -> float:
        """One-sided 95 % upper bound on the rate, in % (100 when nothing was observed)."""
        return 100 * upper_bound(self.count, self.out_of, CONFIDENCE)

    def power(self) -> str:
        """``0 lost of 1,000 injected: rate < 0.30% (95%)``."""
        if self.out_of == 0:
            return f"no canary to judge on: none {self.population}"
        return f"{self.count:,} {self.verb} of {self.out_of:,} {self.population}: rate < {self.bound:.2f}% (95%)"


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
    # per latency series (``e2e``, a stage): how far a latency may be off, from how often the probes looked,
    # and what that is made of (e.g. "iceberg looks every 1.0s, api every 0.1s")
    resolution: Mapping[str, tuple[float, str]] = field(default_factory=dict)


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
    resolution: Mapping[str, float] | None = None,
) -> Measurements:
    """The SLA engine's view of a run; ``freshness_limit`` is the e2e latency a canary must meet for the
    pipeline to count as recovered after a fault; ``resolution`` each probe's (seconds between looks)."""
    s = summary
    latencies = {stage: book.hop_latencies(stage) for stage in book.stages}
    latencies["e2e"] = book.latencies_since_injection(s.final)
    for name, mask in window_masks(book, faults).items():
        latencies[f"e2e[{name}]"] = latencies["e2e"][mask]
        for stage in book.stages:
            latencies[f"{stage}[{name}]"] = book.hop_latencies(stage, among=mask)
    tallies = _run_tallies(s)
    for figures in s.stages:
        tallies |= {f"{name}.{figures.name}": tally for name, tally in _stage_tallies(s, book, figures).items()}
    return Measurements(
        latencies=latencies,
        tallies=tallies,
        throughput=s.throughput,
        coverage=_coverage_tally(s),
        injected=s.injected,
        extra_min_samples=extra_min_samples,
        recovery=recovery(book, faults, freshness_limit) if faults else None,
        resolution=_resolutions(book, resolution or {}),
    )


def _resolutions(book: TraceBook, resolution: Mapping[str, float]) -> dict[str, tuple[float, str]]:
    """Per latency series, how far its latencies may be off and why (the probes' look intervals)."""
    if not resolution:
        return {}
    looks = hop_resolutions(book.route, resolution)
    out: dict[str, tuple[float, str]] = {}
    for stage in book.stages:
        up = book.route.upstream[stage]
        spans = [stage] if up == SOURCE else [up, stage]
        how = ", ".join(f"{name} looks every {resolution.get(name, 0.0):.2f}s" for name in spans)
        out[stage] = (looks[stage], how)
    final = book.route.final
    out["e2e"] = (resolution.get(final, 0.0), f"{final} looks every {resolution.get(final, 0.0):.2f}s")
    return out


def _run_tallies(s: RunSummary) -> dict[str, Tally]:
    """The whole run's counts, each out of the canaries it could have happened to."""
    stuck = "; ".join(f"{len(tags)} stuck after {stage}" for stage, tags in s.stuck.items())
    per_stage = ", ".join(f"{st.name}: {st.extra_copies}" for st in s.stages)
    incomplete_detail = ", ".join(
        f"{name}: {s.delivered - count:,} of {s.delivered:,} {_seen_verb(name)}" for name, count in s.incomplete.items()
    )
    blind = {what: f"{st.name} {why}" for st in s.stages for what, why in st.unobservable.items()}
    retractions = "seen, then gone, per stage: " + ", ".join(
        f"{st.name}: {st.retracted}" + (f" ({st.restored} restored)" if st.restored else "") for st in s.stages
    )
    return {
        "lost": Tally(
            s.lost, s.injected, f"{s.lost} of {s.injected} not delivered" + (f" ({stuck})" if stuck else ""),
            verb="lost", population="injected",
        ),
        "duplicates": _blind(
            Tally(s.duplicates, s.seen, f"extra copies per stage: {per_stage}", verb="duplicated",
                  population="seen at a stage"),
            blind.get("duplicates"),
        ),
        "corrupted": Tally(
            s.corrupted, s.compared_canaries, f"{s.corrupted} canaries with differing fields",
            inconclusive=None if s.compared
            else "no stage compares fields (set `fields` on a stage): nothing was compared",
            verb="corrupted", population="compared",
        ),
        "retracted": _blind(
            Tally(s.retracted, s.seen, retractions, verb="retracted", population="seen at a stage"),
            blind.get("retracted"),
        ),
        "incomplete": Tally(
            s.incomplete_canaries, s.delivered, incomplete_detail or "no stage before the last one",
            not_applicable=None if s.incomplete else f"only one stage ({s.final}) is probed",
            verb="incomplete", population="delivered",
        ),
        "out_of_order": _order_tally(
            s.out_of_order, s.ordered_canaries, f"judged per source partition and key at {', '.join(s.order_stages)}"
        ),
        "delivered": Tally(
            s.delivered, s.injected, f"{s.delivered} of {s.injected} delivered at {s.final}",
            verb="delivered", population="injected",
        ),
    }  # fmt: skip


def _stage_tallies(s: RunSummary, book: TraceBook, st: StageSummary) -> dict[str, Tally]:
    """One stage's counts (``duplicates.iceberg``...), each out of the canaries that stage could show it on."""
    name = st.name
    seen = st.reached
    compared = st.compared
    blind = st.unobservable
    placed = int((book.refs(name)[1] >= 0).sum())
    missing = s.injected - seen
    return {
        "lost": Tally(missing, s.injected, f"{missing} of {s.injected} never seen at {name}", verb="lost",
                      population="injected"),
        "duplicates": _blind(
            Tally(st.duplicated, seen, f"{st.extra_copies} extra copies at {name}", verb="duplicated",
                  population=f"seen at {name}"),
            blind.get("duplicates") and f"{name} {blind['duplicates']}",
        ),
        "corrupted": Tally(
            st.corrupted, compared, f"{st.corrupted} canaries with differing fields at {name}",
            inconclusive=None if compared else f"{name} compared no field (set stages.{name}.fields)",
            verb="corrupted", population=f"compared at {name}",
        ),
        "retracted": _blind(
            Tally(st.retracted, seen, f"seen, then gone at {name}: {st.retracted} ({st.restored} restored)",
                  verb="retracted", population=f"seen at {name}"),
            blind.get("retracted") and f"{name} {blind['retracted']}",
        ),
        "incomplete": Tally(
            st.incomplete, s.delivered,
            f"{name}: {s.delivered - st.incomplete:,} of {s.delivered:,} {_seen_verb(name)}",
            not_applicable=None if name != s.final else f"{name} is the last stage: what it misses is lost",
            verb="incomplete", population="delivered",
        ),
        "out_of_order": _order_tally(st.out_of_order, placed, f"judged per source partition and key at {name}"),
        "delivered": Tally(seen, s.injected, f"{seen} of {s.injected} seen at {name}", verb="seen",
                           population="injected"),
    }  # fmt: skip


def _blind(tally: Tally, why: str | None) -> Tally:
    """A count a stage cannot observe: what was seen elsewhere still fails it, none seen is inconclusive."""
    if why is None or tally.count:
        return tally
    return dataclasses.replace(tally, inconclusive=f"{why}: none seen is no proof of none")


def _order_tally(count: int | None, placed: int, detail: str) -> Tally:
    if count is None:
        return Tally(
            0, 0, "", verb="out of order", population="placed at an ordered stage",
            not_applicable="no probed stage shows an order the validator did not make itself (its own producer's "
            "offsets); name an ordering column (stages.iceberg.order_column, stages.api.order_field)",
        )  # fmt: skip
    inconclusive = None
    if not placed:
        inconclusive = (
            "no canary was placed in an order the run can judge: none reached an ordered stage, or the partition "
            "each rode is not known (probe the Kafka topic the validator produces to)"
        )
    return Tally(count, placed, detail, inconclusive, verb="out of order", population="placed at an ordered stage")


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
        after = (sent > w.end) & (sent < until) & ~np.isnan(e2e)  # unmeasured latencies tell nothing
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
    """Partitions without a canary, out of every probed stage's; the detail stays one short line at any partition
    count (the seen/delivered figures per partition are in the JSON and HTML reports)."""
    sharded = [st for st in s.stages if st.shards]
    if not sharded:
        return Tally(0, 0, "", not_applicable="no probed stage has partitions")
    total = sum(len(st.shards) for st in sharded)
    reached = "; ".join(
        f"{st.name}: {sum(1 for c in st.shards if c.seen)} of {len(st.shards)} partitions reached" for st in sharded
    )
    empty = {st.name: [c.shard for c in st.shards if c.seen == 0] for st in sharded}
    missing = sum(map(len, empty.values()))
    if missing:
        names = "; ".join(
            f"{stage} partition{'s' if len(shards) > 1 else ''} {listed(shards)}"
            for stage, shards in empty.items()
            if shards
        )
        return Tally(missing, total, f"no canary in {names} ({reached})")
    return Tally(0, total, reached)


def listed(items: Sequence[object], shown: int = 10) -> str:
    """``3, 17, 21``: the first ``shown``, then how many more."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(map(str, items[:shown])) + more
