"""Iceberg probe cost vs table history: the time of one ``IcebergProbe.poll()`` after one new snapshot,
on tables holding 0, 100 and 1,000 prior snapshots (the largest about 10M rows).

The tables use the reference consumer's schema and table properties (compose/services/iceberg.py) in a
pyiceberg SqlCatalog in a temp folder. History is written with a few big Arrow appends (the rows) and
many tiny ones (the snapshot count). Polls on the three tables alternate round by round, so machine noise
hits them alike; the figure is the ratio of medians.

Building 1,000 snapshots with ``table.append`` is slow for a reason of its own: pyiceberg deep-copies the
whole table metadata (every snapshot) about twenty times per append, so each append costs O(history).
While the fixture is built (never while the probe is timed) that copy is made shallow; the metadata
written is the same. BENCHMARKS.md reports what this means for the reference consumer.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from benchmarks.common import COMPOSE, Figure, book_for, probe_for
from pipeline_check.backends.iceberg.probe import IcebergProbe
from pipeline_check.config import PipelineConfig

HISTORY = (0, 100, 1000)
BIG_APPENDS = {0: 0, 100: 1, 1000: 5}  # appends of BIG_ROWS rows before the tiny ones
BIG_ROWS = 2_000_000
TINY_ROWS = 100
NEW_ROWS = 1_000  # one new snapshot per poll: about one consumer flush
NEW_CANARIES = 100
ROUNDS = 7
GOAL = 1.5


def _reference_schema() -> tuple[Any, dict[str, str], pa.Schema]:
    """The reference consumer's Iceberg schema, table properties and Arrow schema."""
    sys.path.insert(0, str(COMPOSE))
    try:
        from services.iceberg import TABLE_PROPERTIES, TRADES_ARROW_SCHEMA, TRADES_SCHEMA  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(COMPOSE))
    return TRADES_SCHEMA, dict(TABLE_PROPERTIES), TRADES_ARROW_SCHEMA


def _decimal(units: npt.NDArray[np.int64]) -> pa.Array:
    """decimal(18,8) from unscaled int64 values, without a Python object per value."""
    words = np.empty((len(units), 2), np.int64)
    words[:, 0] = units
    words[:, 1] = np.where(units < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(18, 8), len(units), [None, pa.py_buffer(words.tobytes())])


def _strings(rng: np.random.Generator, n: int, choices: list[str], kind: pa.DataType) -> pa.Array:
    indices = pa.array(rng.integers(0, len(choices), n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(choices)).cast(kind)


def trades(schema: pa.Schema, ids: npt.NDArray[np.int64], t0_ms: int, rng: np.random.Generator) -> pa.Table:
    """Rows of the reference table for these trade ids (background trades, or canaries by tag)."""
    n = len(ids)
    times = pa.array((t0_ms + np.arange(n, dtype=np.int64) // 10) * 1000, pa.timestamp("us", tz="UTC"))
    columns = {
        "symbol": _strings(rng, n, ["BTCUSDT", "ETHUSDT"], schema.field("symbol").type),
        "trade_id": pa.array(ids, pa.int64()),
        "price": _decimal(rng.integers(6_000_000_000_000, 7_000_000_000_000, n, dtype=np.int64)),
        "quantity": _decimal(rng.integers(1_000, 200_000_000, n, dtype=np.int64)),
        "side": _strings(rng, n, ["buy", "sell"], schema.field("side").type),
        "event_time": times,
        "trade_time": times,
        "ingest_time": times,
        "kafka_partition": pa.array(rng.integers(0, 3, n, dtype=np.int32)),
        "kafka_offset": pa.array(np.arange(n, dtype=np.int64)),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


@contextmanager
def _shallow_metadata_copies() -> Iterator[None]:
    """pyiceberg deep-copies the table metadata on every update; make it shallow while the fixture is
    built (the metadata written is the same, the cost of an append stops growing with history)."""
    from pydantic import BaseModel
    from pyiceberg.table.metadata import TableMetadataV2

    original = BaseModel.model_copy

    def shallow(self: BaseModel, *, update: dict[str, Any] | None = None, deep: bool = False) -> BaseModel:
        return original(self, update=update, deep=False)

    TableMetadataV2.model_copy = shallow  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del TableMetadataV2.model_copy


class _Case:
    """One table with ``history`` prior snapshots, and a probe watching it for one run's canaries."""

    def __init__(self, history: int, folder: Path, catalog_props: dict[str, str]) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        self.history = history
        iceberg_schema, properties, self.arrow_schema = _reference_schema()
        props = {**catalog_props, "uri": f"sqlite:///{folder}/catalog.db", "warehouse": f"file://{folder}/warehouse"}
        (folder / "warehouse").mkdir(parents=True)
        self.catalog_props = props
        catalog = SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})
        catalog.create_namespace("market")
        self.table = catalog.create_table("market.trades", schema=iceberg_schema, properties=properties)
        self.rng = np.random.default_rng(history)
        self.next_id = 1
        self.t0_ms = 1_750_000_000_000
        self.rows = 0
        self.polls: list[float] = []
        self.found: list[int] = []
        self.probe: IcebergProbe | None = None

    def _append(self, ids: npt.NDArray[np.int64]) -> None:
        self.table.append(trades(self.arrow_schema, ids, self.t0_ms, self.rng))
        self.t0_ms += len(ids) // 10 + 1
        self.rows += len(ids)

    def _background(self, n: int) -> npt.NDArray[np.int64]:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def build(self) -> None:
        """Write the history: big appends for the rows, tiny ones for the snapshot count."""
        with _shallow_metadata_copies():
            big = BIG_APPENDS[self.history]
            for _ in range(big):
                self._append(self._background(BIG_ROWS))
            for _ in range(self.history - big):
                self._append(self._background(TINY_ROWS))

    def start_probe(self) -> None:
        config = PipelineConfig.model_validate(
            {
                "source": {"type": "websocket", "port": 1},
                "stages": {
                    "iceberg": {
                        "catalog": self.catalog_props,
                        "catalog_name": "local",
                        "table": "market.trades",
                        "fields": {"symbol": "s", "price": "p:decimal", "quantity": "q:decimal", "side": "m:side"},
                    }
                },
            }
        )
        self.book = book_for(config, NEW_CANARIES * ROUNDS)
        self.run = self.book.run
        self.seq = 0
        probe = probe_for(config, "iceberg", self.book)
        if not isinstance(probe, IcebergProbe):
            raise TypeError(f"expected the iceberg probe, got {probe!r}")
        self.probe = probe
        asyncio.run(self.probe.start())

    def round(self) -> None:
        """Commit one new snapshot (a flush: background rows and canaries), then time one poll."""
        assert self.probe is not None
        clock = self.book.clock
        for _ in range(NEW_CANARIES):
            self.book.inject(self.seq, clock.now())
            self.seq += 1
        canaries = np.array([self.run.tag(s) for s in range(self.seq - NEW_CANARIES, self.seq)], np.int64)
        self._append(np.concatenate([self._background(NEW_ROWS - NEW_CANARIES), canaries]))
        began = time.perf_counter()
        _, changes = self.probe.poll()
        self.polls.append(time.perf_counter() - began)
        self.found.append(sum(sum(c.delta.values()) for c in changes))

    @property
    def snapshots(self) -> int:
        return len(self.table.snapshots())


def run() -> Figure:
    """Build the three tables, alternate new-snapshot + poll rounds over them, compare medians."""
    with tempfile.TemporaryDirectory(prefix="pc-bench-iceberg-") as tmp:
        cases: list[_Case] = []
        build_seconds: dict[str, float] = {}
        for history in HISTORY:
            began = time.monotonic()
            case = _Case(history, Path(tmp) / f"h{history}", {"type": "sql"})
            case.build()
            case.start_probe()
            cases.append(case)
            build_seconds[str(history)] = round(time.monotonic() - began, 1)
        for _ in range(ROUNDS):
            for case in cases:
                case.round()
        medians = {c.history: statistics.median(c.polls) for c in cases}
        missed = [c.history for c in cases if c.found != [NEW_CANARIES] * ROUNDS]
        ratio = medians[1000] / medians[0]
        values: dict[str, Any] = {
            "ratio_1000_vs_0": round(ratio, 2),
            "ratio_100_vs_0": round(medians[100] / medians[0], 2),
            "poll_ms_median": {str(h): round(m * 1000, 1) for h, m in medians.items()},
            "poll_ms_all": {str(c.history): [round(p * 1000, 1) for p in c.polls] for c in cases},
            "prior_snapshots": {str(c.history): c.snapshots - ROUNDS for c in cases},
            "rows": {str(c.history): c.rows for c in cases},
            "rounds": ROUNDS,
            "build_seconds": build_seconds,
        }
    ms = values["poll_ms_median"]
    return Figure(
        name="iceberg_probe_cost",
        title="Iceberg probe cost vs history",
        headline=f"poll {ms['0']} / {ms['100']} / {ms['1000']} ms at 0 / 100 / 1,000 snapshots: x{ratio:.2f}",
        goal=f"poll time at 1,000 prior snapshots ≤ {GOAL}x the time at 0",
        met=ratio <= GOAL and not missed,
        values=values,
        notes=(f"canaries missed by a poll on tables {missed}; " if missed else "")
        + f"one new snapshot of {NEW_ROWS} rows ({NEW_CANARIES} canaries) before each poll; median of {ROUNDS} "
        f"rounds; the largest table holds {cases[-1].rows:,} rows",
    )
