from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline_check import sla
from pipeline_check.clock import Clock
from pipeline_check.config import DEFAULT_THRESHOLDS
from pipeline_check.events import Event, InjectionStats, RunFinished, RunStarted
from pipeline_check.messages import TradeFactory
from pipeline_check.tags import RunId
from pipeline_check.trace import SOURCE, RunSummary, TraceBook

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


@dataclass
class SyntheticRun:
    book: TraceBook
    summary: RunSummary
    measurements: sla.Measurements
    results: tuple[sla.CheckResult, ...]
    started: RunStarted
    finished: RunFinished

    @property
    def events(self) -> list[Event]:
        from pipeline_check.events import CheckFinished, Injected, Observed

        s = self.summary
        return [
            self.started,
            Injected(sent=s.injected, total=s.injected, background=0, achieved_rate=s.offered_rate),
            *(Observed(st.name, st.reached, s.injected) for st in s.stages),
            *(CheckFinished(r) for r in self.results),
            self.finished,
        ]


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
) -> SyntheticRun:
    """Canary ``seq`` is injected at ``T0 + seq / rate`` and seen at each stage ``hops[stage]`` (plus
    ``seq % 10`` ms) after its upstream. ``lost`` maps a seq to the last stage it reaches (``source``:
    none); ``duplicates`` lists seqs seen twice per stage; ``corrupt`` seqs hold a wrong price."""
    lost = lost or {}
    duplicates = duplicates or {}
    run = RunId.new(now=WALL_OFFSET + T0)
    clock = Clock(offset=WALL_OFFSET)
    book = TraceBook(run, TradeFactory(run, seed=7, count=count, symbol="CANARYUSDT"), stages, clock)
    for seq in range(count):
        times = {SOURCE: T0 + seq / rate}
        book.inject(seq, times[SOURCE])
        last = lost.get(seq, stages[-1])
        reach = () if last == SOURCE else stages[: stages.index(last) + 1]
        for stage in reach:
            at = times[book.upstream(stage)] + hops[stage] + (seq % 10) / 1000
            times[stage] = at
            for _ in range(2 if seq in duplicates.get(stage, ()) else 1):
                book.seen(stage, seq, at, ref=seq, partition=0)
        if seq in corrupt:
            book.diff(stages[-1], seq, {"price": "0.00000001"}, {"price": "p:decimal"})
    summary = book.summary(rate)
    m = book.measurements(summary)
    results = tuple(sla.evaluate(sla.parse_threshold(t, stages), m) for t in thresholds)
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
    finished = RunFinished(
        verdict=max((r.status for r in results), default=sla.Status.PASSED),
        results=results,
        summary=summary,
        injection=InjectionStats(count, 0, rate, rate * 0.99, 0.002, 0),
        resolution=dict.fromkeys(stages, 0.1),
        duration=12.5,
    )
    return SyntheticRun(book, summary, m, results, started, finished)


@pytest.fixture
def make_run() -> Callable[..., SyntheticRun]:
    """``make_run(count=..., lost={seq: last_stage}, ...)``: see :func:`build_run`."""
    return build_run
