from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.book import Ref, TraceBook
from pipeline_check.trace.stages import BUILTIN, SOURCE, Route
from pipeline_check.verdict.evaluation import evaluate
from pipeline_check.verdict.events import Event, RunFinished, RunStarted
from pipeline_check.verdict.measurements import Measurements, measurements
from pipeline_check.verdict.probe_load import LoadFigures
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import exit_code, verdict_of
from pipeline_check.verdict.summary import InjectionStats, RunSummary, summarise
from pipeline_check.verdict.thresholds import DEFAULT_THRESHOLDS, parse_thresholds

# autouse: every JSON report a test renders is checked against the bundled schema
from tests.support.report_schema import reports_follow_the_schema  # noqa: F401

# the reference services are a package of compose/ (run there as `python -m services.X`); their
# pure-logic tests import it the same way
COMPOSE = Path(__file__).resolve().parents[2] / "compose"
if str(COMPOSE) not in sys.path:
    sys.path.insert(0, str(COMPOSE))

# -- synthetic runs: a trace book filled with made-up times, and the events a run of it would yield ----

ALL_STAGES = ("kafka", "consumer", "iceberg", "api")
HOPS = {"kafka": 0.010, "consumer": 0.050, "iceberg": 0.500, "api": 0.200}
WALL_OFFSET = 1_750_000_000.0  # the run's clock: monotonic 0.0 is this wall-clock second
T0 = 100.0
# what the synthetic run's probes asked of the system over its 12.5 s
PROBE_LOAD = {
    "kafka": LoadFigures(12.5, {"fetches": 25, "admin": 2}, {"fetches": 40_000_000, "admin": 0}),
    "consumer": LoadFigures(12.5, {"admin": 125}, {"admin": 0}),
    "iceberg": LoadFigures(
        12.5, {"catalog_loads": 6, "object_gets": 175}, {"catalog_loads": 900, "object_gets": 2_500_000}
    ),
    "api": LoadFigures(12.5, {"requests": 26}, {"requests": 26_000}),
}


@dataclass
class SyntheticRun:
    book: TraceBook
    summary: RunSummary
    measurements: Measurements
    results: tuple[CheckResult, ...]
    started: RunStarted
    finished: RunFinished

    @property
    def events(self) -> list[Event]:
        from pipeline_check.verdict.events import CheckFinished, Injected, Observed

        s = self.summary
        return [
            self.started,
            Injected(sent=s.injected, total=s.injected, background=0, achieved_rate=s.injection.achieved_rate),
            *(Observed(st.name, st.reached, s.injected) for st in s.stages),
            *(CheckFinished(r) for r in self.results),
            self.finished,
        ]


def route_of(stages: Sequence[str]) -> Route:
    """The route of built-in ``stages``."""
    return Route.of({s: (BUILTIN[s].upstream, BUILTIN[s].branch) for s in stages})


def build_run(
    count: int = 200,
    stages: tuple[str, ...] = ALL_STAGES,
    *,
    rate: float = 100.0,
    hops: Mapping[str, float] = HOPS,
    lost: Mapping[int, str] | None = None,
    duplicates: Mapping[str, Sequence[int]] | None = None,
    corrupt: Sequence[int] = (),
    thresholds: Sequence[str] = DEFAULT_THRESHOLDS,
    config: Mapping[str, Any] | None = None,
    compare: bool = True,
    partitions: int = 1,
) -> SyntheticRun:
    """Canary ``seq`` is injected at ``T0 + seq / rate`` and seen at each stage ``hops[stage]`` (plus
    ``seq % 10`` ms) after its upstream. ``lost`` maps a seq to the last stage it reaches (``source``:
    none); ``duplicates`` lists seqs seen twice per stage; ``corrupt`` seqs hold a wrong price; with
    ``compare`` every delivered canary's price is compared at the last stage. Canary ``seq`` sits on kafka
    partition ``seq % partitions``."""
    lost = lost or {}
    duplicates = duplicates or {}
    run = RunId.new(now=WALL_OFFSET + T0)
    clock = Clock(offset=WALL_OFFSET)
    route = route_of(stages)
    book = TraceBook(run, TradeFactory(run, seed=7, count=count, symbols=("CANARYUSDT",)), route, clock)
    if "kafka" in stages:
        book.declare_shards("kafka", range(partitions))
    for seq in range(count):
        times = {SOURCE: T0 + seq / rate}
        book.inject(seq, times[SOURCE])
        last = lost.get(seq, route.final)
        reach = () if last == SOURCE else route.stages[: route.stages.index(last) + 1]
        for stage in reach:
            at = times[route.upstream[stage]] + hops[stage] + (seq % 10) / 1000
            times[stage] = at
            for _ in range(2 if seq in duplicates.get(stage, ()) else 1):
                book.seen(stage, run.tag(seq), at, ref=Ref(seq % partitions, seq))
        if compare and route.final in reach:
            sent = book.factory.canary(seq, int(book.sent_ms[seq])).price
            held = "0.00000002" if seq in corrupt else sent
            book.diff(route.final, run.tag(seq), {"price": held}, {"price": "p:decimal"})
    injection = InjectionStats(count, 0, rate, rate * 0.99, 0.002, 0)
    summary = summarise(book, injection, settle_s=2.0)
    m = measurements(summary, book)
    results = tuple(evaluate(t, m) for t in parse_thresholds([("t", t) for t in thresholds], stages))
    started = RunStarted(
        run_id=str(run),
        scenario="smoke",
        source="websocket",
        stages=stages,
        count=count,
        rate=rate,
        background_rate=0.0,
        started_at=clock.wall(T0),
        config=config if config is not None else {"load": {"count": count, "rate": rate}},
    )
    verdict = verdict_of([r.status for r in results])
    finished = RunFinished(
        verdict=verdict,
        exit_code=exit_code([r.status for r in results]),
        results=results,
        summary=summary,
        resolution=dict.fromkeys(stages, 0.1),
        duration=12.5,
        book=book,
        probe_load={stage: PROBE_LOAD[stage] for stage in stages if stage in PROBE_LOAD},
    )
    return SyntheticRun(book, summary, m, results, started, finished)


@pytest.fixture
def make_run() -> Callable[..., SyntheticRun]:
    """``make_run(count=..., lost={seq: last_stage}, ...)``: see :func:`build_run`."""
    return build_run
