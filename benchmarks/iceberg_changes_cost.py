"""Change-feed cost vs table history: the time of one ``ChangeFeed.poll`` after one new snapshot, on
tables holding 10 and 1,000 prior snapshots, with the metadata read as the probe reads it
(:class:`~pipeline_check.probes.iceberg_metadata.MetadataReader`: only new snapshots validated).

The tables are those of ``iceberg_cost`` (the reference consumer's schema and properties, manifest merging
on, 100 background rows per prior snapshot); each round commits one snapshot of 1,000 rows holding 100
canaries, then times the metadata load and the poll. Rounds alternate between the tables so machine noise
hits them alike. Also timed once per table: ``seek`` to the current snapshot (the feed's start, a full
filtered read of the state). ``python -m benchmarks.iceberg_changes_cost`` prints the figure.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Figure
from benchmarks.iceberg_cost import NEW_CANARIES, NEW_ROWS, TINY_ROWS, _Case, _shallow_metadata_copies
from pipeline_check.probes.iceberg_changes import ChangeFeed
from pipeline_check.probes.iceberg_metadata import MetadataReader
from pipeline_check.tags import RunId

HISTORY = (10, 1000)
ROUNDS = 9
GOAL = 1.5


class _Followed:
    """One table with ``history`` prior snapshots and a change feed at its current snapshot."""

    def __init__(self, history: int, folder: Path) -> None:
        self.case = _Case(history, folder, {"type": "sql"})
        with _shallow_metadata_copies():
            for _ in range(history):
                self.case._append(self.case._background(TINY_ROWS))
        table = self.case.table
        self.run = RunId.new()
        self.feed = ChangeFeed("trade_id", self.run.lo, self.run.hi, ("symbol", "price", "quantity", "side"))
        began = time.perf_counter()
        self.feed.seek(table, table.current_snapshot())  # type: ignore[arg-type]
        self.seek_ms = (time.perf_counter() - began) * 1000
        self.reader = MetadataReader(s.snapshot_id for s in table.snapshots())
        self.seq = 0
        self.load_ms: list[float] = []
        self.poll_ms: list[float] = []
        self.found: list[int] = []

    def round(self) -> None:
        """Commit one new snapshot (background rows and canaries), then time the metadata load and poll."""
        case = self.case
        canaries = np.array([self.run.tag(s) for s in range(self.seq, self.seq + NEW_CANARIES)], np.int64)
        self.seq += NEW_CANARIES
        case._append(np.concatenate([case._background(NEW_ROWS - NEW_CANARIES), canaries]))
        began = time.perf_counter()
        table, new = self.reader.load(case.table, case.table.metadata_location)
        loaded = time.perf_counter()
        changes = self.feed.poll(table)
        done = time.perf_counter()
        self.reader.handled |= new
        self.load_ms.append((loaded - began) * 1000)
        self.poll_ms.append((done - loaded) * 1000)
        self.found.append(sum(sum(c.delta.values()) for c in changes))


def run() -> Figure:
    with tempfile.TemporaryDirectory(prefix="pc-bench-changes-") as tmp:
        tables = [_Followed(history, Path(tmp) / f"h{history}") for history in HISTORY]
        for _ in range(ROUNDS):
            for followed in tables:
                followed.round()
    poll = {t.case.history: statistics.median(t.poll_ms) for t in tables}
    load = {t.case.history: statistics.median(t.load_ms) for t in tables}
    ratio = poll[HISTORY[-1]] / poll[HISTORY[0]]
    missed = [t.case.history for t in tables if t.found != [NEW_CANARIES] * ROUNDS]
    values: dict[str, Any] = {
        "ratio_poll": round(ratio, 2),
        "poll_ms_median": {str(h): round(m, 1) for h, m in poll.items()},
        "poll_ms_max": {str(t.case.history): round(max(t.poll_ms), 1) for t in tables},
        "load_ms_median": {str(h): round(m, 1) for h, m in load.items()},
        "seek_ms": {str(t.case.history): round(t.seek_ms, 1) for t in tables},
        "poll_ms_all": {str(t.case.history): [round(p, 1) for p in t.poll_ms] for t in tables},
        "rounds": ROUNDS,
    }
    return Figure(
        name="iceberg_changes_cost",
        title="Iceberg change feed cost vs history",
        headline=f"poll {values['poll_ms_median']['10']} / {values['poll_ms_median']['1000']} ms at 10 / 1,000 "
        f"snapshots: x{ratio:.2f}",
        goal=f"poll time at 1,000 prior snapshots <= {GOAL}x the time at 10",
        met=ratio <= GOAL and not missed,
        values=values,
        notes=(f"canaries missed on tables {missed}; " if missed else "")
        + f"one new snapshot of {NEW_ROWS} rows ({NEW_CANARIES} canaries) before each poll; median of {ROUNDS}",
    )


if __name__ == "__main__":
    figure = run()
    print(figure.headline)
    print(json.dumps(figure.values, indent=1))
