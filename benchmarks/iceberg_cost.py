"""Iceberg probe cost vs table history, on both catalogs: the time of one ``IcebergProbe.poll()`` after a
commit and of one with nothing new, on tables with 0, 1,000 and 10,000 prior snapshots and on a table of
10,000 data files.

Tables use the reference consumer's schema and table properties (compose/services/iceberg.py): in a pyiceberg
SqlCatalog in a temp folder (``iceberg_probe_cost``), and behind Apache Iceberg's REST catalog server over S3
(the lakehouse profile's ``s3`` and ``catalog`` processes, started and stopped here: ``iceberg_rest_cost``).

History is made the way it would be read, not the way it is written: committing 10,000 snapshots through
pyiceberg takes hours (each commit rewrites, and pyiceberg re-validates and deep-copies, the whole metadata),
so after one real append the table's metadata file is rewritten with N snapshots before that one (each a copy
of it: same manifest list, its own id, parent, sequence number and time, all in the snapshot log) and the file
is registered as the table. Every later commit is a real pyiceberg append on top of that history (its metadata
copy made shallow while it runs, never while the probe is timed). The table of 10,000 data files is one real
fast append of 10,000 data file entries copied from a real one (their paths are never opened: their tag
statistics rule the run's canaries out, as a real table's background files do).

Each round commits one append of ``NEW_ROWS`` rows (``NEW_CANARIES`` of them this run's canaries, about a
consumer flush) to every table, times the probe's poll after it, then an idle poll; rounds alternate between
the tables so machine noise hits them alike. Every poll must find its canaries. Wall time is what the probe
waits; the probe's own CPU (nothing else runs in this process) excludes the catalog server's share.
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from benchmarks.common import COMPOSE, ROUNDS, Figure, Spread, book_for, probe_for
from pipeline_check.backends.iceberg.probe import IcebergProbe
from pipeline_check.config import PipelineConfig
from pipeline_check.pytest_plugin import free_ports

HISTORY = (0, 1_000, 10_000)
FILES = 10_000
CASES = (*(f"h{n}" for n in HISTORY), f"f{FILES}")
COMMITS = 3  # commit + poll cycles per round (the round's figure is their median)
NEW_ROWS = 1_000
NEW_CANARIES = 100
SQL_GOAL = None  # stated, not judged: each new metadata file holds every snapshot (see BENCHMARKS.md)
REST_GOAL = 1.2
PROFILE = COMPOSE / "profiles" / "lakehouse.toml"


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
def shallow_metadata_copies() -> Iterator[None]:
    """pyiceberg deep-copies the table metadata on every update; make it shallow while a writer commits (the
    metadata written is the same, the cost of an append stops growing with history)."""
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


def _read(table: Any, location: str) -> bytes:
    from pyiceberg.serializers import Compressor

    with table.io.new_input(location).open() as raw, Compressor.get_compressor(location).stream_decompressor(raw) as f:
        data: bytes = f.read()
    return data


def with_history(catalog: Any, table: Any, name: str, prior: int) -> Any:
    """``table`` (one snapshot) registered as ``name`` with ``prior`` snapshots before its current one."""
    data = json.loads(_read(table, table.metadata_location))
    real = next(s for s in data["snapshots"] if s["snapshot-id"] == data["current-snapshot-id"])
    chain, parent = [], None
    for i in range(prior):
        snapshot = copy.deepcopy(real)
        snapshot |= {
            "snapshot-id": 10**12 + i,
            "sequence-number": i + 1,
            "timestamp-ms": real["timestamp-ms"] - prior + i,
        }
        snapshot.pop("parent-snapshot-id", None)
        if parent is not None:
            snapshot["parent-snapshot-id"] = parent
        chain.append(snapshot)
        parent = snapshot["snapshot-id"]
    current = real | {"sequence-number": prior + 1}
    if parent is not None:
        current["parent-snapshot-id"] = parent
    data["snapshots"] = [*chain, current]
    data["snapshot-log"] = [
        {"snapshot-id": s["snapshot-id"], "timestamp-ms": s["timestamp-ms"]} for s in data["snapshots"]
    ]
    data["last-sequence-number"] = prior + 1
    data["metadata-log"] = []
    location = f"{table.location()}/metadata/{prior:05d}-{uuid.uuid4()}.metadata.json"
    with table.io.new_output(location).create() as out:
        out.write(json.dumps(data).encode())
    return catalog.register_table(name, location)


class _Case:
    """One table and a probe following it for one run's canaries."""

    def __init__(self, catalog: Any, props: dict[str, str], namespace: str, case: str) -> None:
        iceberg_schema, properties, self.arrow_schema = _reference_schema()
        self.case, self.catalog, self.props = case, catalog, props
        self.rng = np.random.default_rng(len(case))
        self.next_id, self.t0_ms = 1, 1_750_000_000_000
        began = time.monotonic()
        seed = catalog.create_table(f"{namespace}.{case}_seed", schema=iceberg_schema, properties=properties)
        self._append(seed, self._background(NEW_ROWS))
        kind, count = case[0], int(case[1:])
        self.name = f"{namespace}.{case}"
        if kind == "h":
            self.writer = with_history(catalog, seed, self.name, count)
        else:
            self.writer = with_history(catalog, seed, self.name, 0)
            template = next(
                e.data_file
                for m in self.writer.current_snapshot().manifests(self.writer.io)
                for e in m.fetch_manifest_entry(self.writer.io)
            )
            with shallow_metadata_copies(), self.writer.transaction() as tx, tx.update_snapshot().fast_append() as add:
                for i in range(count):
                    data_file = copy.deepcopy(template)
                    data_file[1] = f"{template.file_path}.copy-{i}.parquet"  # the file_path field (read-only property)
                    add.append_data_file(data_file)
        self.build_s = round(time.monotonic() - began, 1)
        self.after_commit: list[tuple[float, float]] = []  # (wall, cpu) seconds
        self.idle: list[tuple[float, float]] = []
        self.found: list[int] = []
        self.metadata_bytes = 0

    def _background(self, n: int) -> npt.NDArray[np.int64]:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def _append(self, table: Any, ids: npt.NDArray[np.int64]) -> None:
        with shallow_metadata_copies():
            table.append(trades(self.arrow_schema, ids, self.t0_ms, self.rng))
        self.t0_ms += len(ids) // 10 + 1

    def start_probe(self) -> None:
        config = PipelineConfig.model_validate(
            {
                "source": {"type": "websocket", "port": 1},
                "stages": {
                    "iceberg": {
                        "catalog": self.props,
                        "catalog_name": self.catalog.name,
                        "table": self.name,
                        "fields": {"symbol": "s", "price": "p:decimal", "quantity": "q:decimal", "side": "m:side"},
                    }
                },
            }
        )
        self.book = book_for(config, NEW_CANARIES * ROUNDS * COMMITS)
        self.seq = 0
        probe = probe_for(config, "iceberg", self.book)
        if not isinstance(probe, IcebergProbe):
            raise TypeError(f"expected the iceberg probe, got {probe!r}")
        self.probe = probe
        asyncio.run(probe.start())

    def commit_and_poll(self) -> None:
        """Commit one flush (background rows and canaries), time the poll after it, then an idle poll."""
        clock, run = self.book.clock, self.book.run
        for _ in range(NEW_CANARIES):
            self.book.inject(self.seq, clock.now())
            self.seq += 1
        canaries = np.array([run.tag(s) for s in range(self.seq - NEW_CANARIES, self.seq)], np.int64)
        self._append(self.writer, np.concatenate([self._background(NEW_ROWS - NEW_CANARIES), canaries]))
        self.metadata_bytes = len(_read(self.writer, self.writer.metadata_location))
        for into in (self.after_commit, self.idle):
            wall, cpu = time.perf_counter(), time.process_time()
            _, changes = self.probe.poll()
            into.append((time.perf_counter() - wall, time.process_time() - cpu))
            if into is self.after_commit:
                self.found.append(sum(sum(c.delta.values()) for c in changes))

    def finish(self) -> None:
        asyncio.run(self.probe.finish())

    def rounds(self, which: list[tuple[float, float]], index: int) -> list[float]:
        """Per round, the median over its commits of ``which``'s wall (0) or CPU (1) seconds, in ms."""
        return [
            1000 * statistics.median(t[index] for t in which[r * COMMITS : (r + 1) * COMMITS]) for r in range(ROUNDS)
        ]


def _measure(catalog: Any, props: dict[str, str]) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    catalog.create_namespace(namespace)
    cases = [_Case(catalog, props, namespace, case) for case in CASES]
    for case in cases:
        case.start_probe()
    for _ in range(ROUNDS * COMMITS):
        for case in cases:
            case.commit_and_poll()
    for case in cases:
        case.finish()
    figures: dict[str, Any] = {}
    for case in cases:
        figures[case.case] = {
            "poll_ms": Spread.of(case.rounds(case.after_commit, 0)),
            "poll_cpu_ms": Spread.of(case.rounds(case.after_commit, 1)),
            "idle_ms": Spread.of(case.rounds(case.idle, 0)),
            "idle_cpu_ms": Spread.of(case.rounds(case.idle, 1)),
            "metadata_bytes": case.metadata_bytes,
            "build_s": case.build_s,
            "missed": [n for n in case.found if n != NEW_CANARIES],
        }
    return figures


def _ratio(figures: dict[str, Any], key: str, top: str) -> Spread:
    low, high = figures["h0"][key], figures[top][key]
    return Spread.of([h / lo for h, lo in zip(high.rounds, low.rounds, strict=True)])


def _values(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        case: {k: v.to_json(2) if isinstance(v, Spread) else v for k, v in f.items()} for case, f in figures.items()
    }


def _ms(figures: dict[str, Any], key: str) -> str:
    return " / ".join(f"{figures[c][key].median:.1f}" for c in CASES)


def run() -> Figure:
    """The SQL catalog's figure: poll cost after a commit and idle, 0 / 1,000 / 10,000 snapshots, 10,000 files."""
    from pyiceberg.catalog.sql import SqlCatalog

    with tempfile.TemporaryDirectory(prefix="pc-bench-iceberg-") as tmp:
        (Path(tmp) / "warehouse").mkdir()
        props = {"type": "sql", "uri": f"sqlite:///{tmp}/catalog.db", "warehouse": f"file://{tmp}/warehouse"}
        catalog = SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})
        figures = _measure(catalog, props)
    commit = _ratio(figures, "poll_ms", "h10000")
    idle = _ratio(figures, "idle_ms", "h10000")
    files = _ratio(figures, "poll_ms", f"f{FILES}")
    missed = {c: f["missed"] for c, f in figures.items() if f["missed"]}
    return Figure(
        name="iceberg_probe_cost",
        title="Iceberg probe cost vs history: SQL catalog",
        headline=f"poll after a commit {_ms(figures, 'poll_ms')} ms at 0 / 1,000 / 10,000 snapshots / 10,000 files: "
        f"x{commit.text()} at 10,000 snapshots; idle poll x{idle.text()}; 10,000 files x{files.text()}",
        goal="stated, not judged: a commit's poll reads the new metadata file, which holds every snapshot; an idle "
        "poll stays flat (<= x1.2)",
        met=idle.median <= REST_GOAL and not missed,
        values={
            "after_commit_ratio_10000": commit.to_json(2),
            "idle_ratio_10000": idle.to_json(2),
            "files_ratio_10000": files.to_json(2),
            "cases": _values(figures),
        },
        notes=(f"canaries missed by a poll: {missed}; " if missed else "")
        + f"{ROUNDS} rounds of {COMMITS} commits per table ({NEW_ROWS} rows, {NEW_CANARIES} canaries each); metadata "
        f"file after the last commit: {_sizes(figures)}",
    )


def _sizes(figures: dict[str, Any]) -> str:
    return ", ".join(f"{case} {figures[case]['metadata_bytes'] / 1e6:.2f} MB" for case in CASES)


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


def run_rest() -> Figure:
    """The REST catalog's figure: the probe's conditional, refs-only loads, same tables and rounds."""
    from pyiceberg.catalog import load_catalog

    with _lakehouse() as props:
        catalog = load_catalog("bench", **props)
        figures = _measure(catalog, props)
    cpu = _ratio(figures, "poll_cpu_ms", "h10000")
    idle_cpu = _ratio(figures, "idle_cpu_ms", "h10000")
    wall = _ratio(figures, "poll_ms", "h10000")
    idle_wall = _ratio(figures, "idle_ms", "h10000")
    missed = {c: f["missed"] for c, f in figures.items() if f["missed"]}
    return Figure(
        name="iceberg_rest_cost",
        title="Iceberg probe cost vs history: REST catalog",
        headline=f"the probe's CPU per poll after a commit {_ms(figures, 'poll_cpu_ms')} ms at 0 / 1,000 / 10,000 "
        f"snapshots / 10,000 files: x{cpu.text()} at 10,000 (idle x{idle_cpu.text()}); wall x{wall.text()} "
        f"(idle x{idle_wall.text()}): the server reads the whole metadata file for every load",
        goal=f"the probe's own work per poll <= x{REST_GOAL} from 0 to 10,000 snapshots, after a commit and idle",
        met=cpu.median <= REST_GOAL and idle_cpu.median <= REST_GOAL and not missed,
        values={
            "cpu_ratio_10000": cpu.to_json(2),
            "idle_cpu_ratio_10000": idle_cpu.to_json(2),
            "wall_ratio_10000": wall.to_json(2),
            "idle_wall_ratio_10000": idle_wall.to_json(2),
            "cases": _values(figures),
        },
        notes=(f"canaries missed by a poll: {missed}; " if missed else "")
        + f"Apache Iceberg's REST catalog server over moto S3; {ROUNDS} rounds of {COMMITS} commits per table; "
        f"metadata file after the last commit: {_sizes(figures)}",
    )


if __name__ == "__main__":
    figure = run_rest() if sys.argv[1:] == ["rest"] else run()
    print(figure.headline)
    json.dump(figure.values, sys.stdout, indent=1)
    print()
