"""Iceberg probe on a REST catalog: the cost of loading the table's metadata per poll vs table history, with
pyiceberg's plain ``refresh()`` (before) and the probe's conditional, refs-only load (``RestMetadata``, after).

The lakehouse profile's S3 (moto) and Apache Iceberg REST catalog server run as processes (compose/profiles/
lakehouse.toml, ``s3`` and ``catalog`` only). Two tables of the reference schema get 10 and 1,000 prior snapshots
(empty appends, 100 per transaction: the snapshot count is what grows the metadata; the rows do not matter).
Each round commits one small append to each table, then times, per table: a refresh and a conditional load
right after the commit, and again with nothing new (an idle poll). Rounds alternate between the tables so
machine noise hits them alike. ``python -m benchmarks.iceberg_rest_cost`` prints the figure.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.common import COMPOSE, Figure
from benchmarks.iceberg_cost import _reference_schema, _shallow_metadata_copies
from pipeline_check.backends.iceberg.metadata import MetadataReader
from pipeline_check.backends.iceberg.probe import RestMetadata
from pipeline_check.pytest_plugin import free_ports

HISTORY = (10, 1000)
PER_TRANSACTION = 100
ROUNDS = 9
GOAL = 1.5
KINDS = ("refresh", "conditional", "refresh_idle", "conditional_idle")
PROFILE = COMPOSE / "profiles" / "lakehouse.toml"


@contextmanager
def _lakehouse() -> Iterator[dict[str, str]]:
    """S3 and the REST catalog on free ports; yields pyiceberg catalog properties; both stopped after."""
    from pipeline_check.stack import LocalStack, load_stack

    with tempfile.TemporaryDirectory(prefix="pc-bench-rest-") as tmp:
        declared = load_stack(PROFILE)
        stack = LocalStack(load_stack(PROFILE, run_dir=Path(tmp), ports=free_ports(list(declared.ports))))
        try:
            for name in ("s3", "catalog"):
                stack.start(name)
            env = stack.spec.services["consumer"].env
            yield {
                "type": "rest",
                "uri": env["ICEBERG_CATALOG_URI"],
                "s3.endpoint": env["S3_ENDPOINT"],
                "s3.access-key-id": env["S3_ACCESS_KEY_ID"],
                "s3.secret-access-key": env["S3_SECRET_ACCESS_KEY"],
                "s3.region": env["S3_REGION"],
                "s3.force-virtual-addressing": "false",
            }
        finally:
            stack.down()


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU milliseconds of ``call``: the CPU is the client's own work (nothing else runs in this
    process), the rest is waiting for the server."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


class _Case:
    """One table with ``history`` prior snapshots: a writer, a table refreshed in full, a conditional loader."""

    def __init__(self, catalog: Any, history: int) -> None:
        iceberg_schema, properties, self.arrow_schema = _reference_schema()
        self.history = history
        name = f"bench.h{history}"
        writer = catalog.create_table(name, schema=iceberg_schema, properties=properties)
        with _shallow_metadata_copies():
            for first in range(0, history, PER_TRANSACTION):
                with writer.transaction() as tx:
                    for _ in range(min(PER_TRANSACTION, history - first)):
                        tx.append(self.arrow_schema.empty_table())
        self.writer = writer
        self.plain = catalog.load_table(name)
        table = catalog.load_table(name)
        self.reader = MetadataReader(s.snapshot_id for s in table.snapshots())
        self.rest = RestMetadata(table, self.reader)
        self.table, _ = self.rest.load(table, self._current(table))  # primes the ETag
        self.next_id = 1
        self.times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}

    @staticmethod
    def _current(table: Any) -> int | None:
        snapshot = table.current_snapshot()
        return None if snapshot is None else int(snapshot.snapshot_id)

    def _load(self) -> None:
        since = self._current(self.table)
        self.table, new = self.rest.load(self.table, since)
        self.reader.handled |= new

    def round(self) -> None:
        rows = pa.Table.from_pylist(
            [{"symbol": "BTCUSDT", "trade_id": self.next_id + i, "side": "buy"} for i in range(10)],
            schema=self.arrow_schema,
        )
        self.next_id += 10
        self.writer.append(rows)
        self.times["refresh"].append(_timed(self.plain.refresh))
        self.times["conditional"].append(_timed(self._load))
        self.times["refresh_idle"].append(_timed(self.plain.refresh))
        self.times["conditional_idle"].append(_timed(self._load))

    @property
    def snapshots(self) -> int:
        return len(self.plain.snapshots())


def run() -> Figure:
    from pyiceberg.catalog import load_catalog

    with _lakehouse() as props:
        catalog = load_catalog("bench", **props)
        catalog.create_namespace("bench")
        built: dict[str, float] = {}
        cases = []
        for history in HISTORY:
            began = time.monotonic()
            cases.append(_Case(catalog, history))
            built[str(history)] = round(time.monotonic() - began, 1)
        for _ in range(ROUNDS):
            for case in cases:
                case.round()
        full_loads = {str(c.history): c.rest.full_loads for c in cases}
        not_modified = {str(c.history): c.rest.not_modified for c in cases}
        fallbacks = {str(c.history): c.rest.fallbacks for c in cases}
        snapshots = {str(c.history): c.snapshots for c in cases}
    low, high = str(HISTORY[0]), str(HISTORY[-1])
    wall = {k: {str(c.history): round(statistics.median(t[0] for t in c.times[k]), 1) for c in cases} for k in KINDS}
    cpu = {k: {str(c.history): round(statistics.median(t[1] for t in c.times[k]), 1) for c in cases} for k in KINDS}
    cpu_ratio = {kind: round(m[high] / m[low], 2) for kind, m in cpu.items()}
    values: dict[str, Any] = {
        "wall_ms_median": wall,
        "client_cpu_ms_median": cpu,
        "wall_ratio": {kind: round(m[high] / m[low], 2) for kind, m in wall.items()},
        "client_cpu_ratio": cpu_ratio,
        "snapshots": snapshots,
        "not_modified": not_modified,  # 304s: every idle poll should be one
        "full_loads": full_loads,
        "fallbacks": fallbacks,
        "build_s": built,
        "rounds": ROUNDS,
    }
    return Figure(
        name="iceberg_rest_cost",
        title="Iceberg REST catalog poll cost vs history",
        headline=f"client CPU per poll after a commit: refresh {cpu['refresh'][low]} / {cpu['refresh'][high]} ms, "
        f"conditional {cpu['conditional'][low]} / {cpu['conditional'][high]} ms at 10 / 1,000 snapshots (wall "
        f"{wall['refresh'][high]} vs {wall['conditional'][high]} ms at 1,000)",
        goal=f"the probe's own work per poll at 1,000 prior snapshots <= {GOAL}x that at 10, after a commit and idle",
        met=cpu_ratio["conditional"] <= GOAL
        and cpu_ratio["conditional_idle"] <= GOAL
        and not any(fallbacks.values())
        and all(n == ROUNDS for n in not_modified.values()),
        values=values,
        notes=f"one commit of 10 rows before each round; median of {ROUNDS}; the server reads the whole metadata "
        "file for every loadTable, a 304 included, so its share of the wall time still grows with history",
    )


if __name__ == "__main__":
    figure = run()
    print(figure.headline)
    json.dump(figure.values, sys.stdout, indent=1)
    print()
