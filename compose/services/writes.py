"""How a flush lands in the Iceberg table (WRITE_MODE): append, upsert or overwrite.

Each flush is one catalog commit whose snapshots carry the Kafka offsets map, whatever the mode:
  append     one APPEND snapshot with the batch (the default).
  upsert     rows keyed by (symbol, trade_id) replace the table's rows of the same key, copy-on-write as
             a MERGE INTO commits it: a flush whose keys are all new is an APPEND; one that matches
             keys is a single OVERWRITE snapshot removing the files that hold them and adding those
             files' other rows plus the batch. pyiceberg 0.12's ``Table.upsert`` is not used: it skips
             matched rows whose columns did not change, so a re-delivered row would never be rewritten,
             and its delete + append (two snapshot producers in one transaction) cost 3-5 times an
             append per flush, as pyiceberg deep-copies the table metadata at every step.
  overwrite  one OVERWRITE snapshot per flush, copy-on-write: every file holding rows of the batch's
             trade_time buckets (OVERWRITE_BUCKET_MS) is read, merged with the batch (the batch wins
             per key) and replaced, each touched bucket by a file of its own. New rows only ever appear
             through overwrite snapshots (except the very first commit of an empty table, which
             Iceberg records as an append).
Upsert and overwrite keep one row per key, so REDELIVER_LAST_FLUSH=1 (each flush also carries the
previous flush's rows) rewrites rows without duplicating them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import reduce

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import FileScanTask, Table, Transaction

from .common import ConfigError, env_bool, env_choice, env_int
from .iceberg import transaction

KEY = ("symbol", "trade_id")
_INDEX = "__row"


class WriteMode(StrEnum):
    APPEND = "append"
    UPSERT = "upsert"
    OVERWRITE = "overwrite"


@dataclass(frozen=True, slots=True)
class WriteConfig:
    mode: WriteMode = WriteMode.APPEND
    redeliver_last: bool = False
    bucket_ms: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WriteConfig:
        mode = WriteMode(env_choice("WRITE_MODE", WriteMode.APPEND, tuple(WriteMode), env=env))
        redeliver = env_bool("REDELIVER_LAST_FLUSH", False, env=env)
        if redeliver and mode is WriteMode.APPEND:
            raise ConfigError(
                "REDELIVER_LAST_FLUSH=1 (env): appending re-delivered rows would write them twice; "
                "set WRITE_MODE=upsert or WRITE_MODE=overwrite, or unset REDELIVER_LAST_FLUSH"
            )
        return cls(
            mode=mode,
            redeliver_last=redeliver,
            bucket_ms=env_int("OVERWRITE_BUCKET_MS", 10_000, minimum=100, maximum=86_400_000, env=env),
        )


def write(table: Table, rows: pa.Table, properties: dict[str, str], cfg: WriteConfig) -> None:
    """Commit ``rows`` in the configured mode, ``properties`` on every snapshot of the commit."""
    if cfg.mode is WriteMode.UPSERT:
        upsert(table, rows, properties)
    elif cfg.mode is WriteMode.OVERWRITE:
        overwrite_buckets(table, rows, properties, cfg.bucket_ms * 1000)
    else:
        with transaction(table) as tx:
            tx.append(rows, snapshot_properties=properties)


# ------------------------------------------------------------------ pure helpers


def _predicate(kind: Callable[..., BooleanExpression], column: str, value: object) -> BooleanExpression:
    """A pyiceberg predicate; typed by hand because its models declare pydantic's field signatures."""
    return kind(column, value)


def _any_of(parts: list[BooleanExpression]) -> BooleanExpression:
    return reduce(Or, parts)


def latest_per_key(new: pa.Table, old: pa.Table | None = None) -> pa.Table:
    """One row per (symbol, trade_id), in their original order: the first of ``new`` holding the key,
    else the first of ``old``."""
    both = new if old is None else pa.concat_tables([new, old.select(new.column_names).cast(new.schema)])
    keyed = both.select(list(KEY)).append_column(_INDEX, pa.array(range(len(both)), pa.int64()))
    first = keyed.group_by(list(KEY), use_threads=False).aggregate([(_INDEX, "min")])[f"{_INDEX}_min"]
    return both.take(first.take(pc.sort_indices(first)))


def time_range_us(rows: pa.Table) -> tuple[int, int]:
    """The smallest and largest trade_time of ``rows``, in epoch microseconds."""
    bounds = pc.min_max(rows["trade_time"].cast(pa.int64()))
    return bounds["min"].as_py(), bounds["max"].as_py()


def key_filter(rows: pa.Table) -> BooleanExpression:
    """The table rows sharing a (symbol, trade_id) with ``rows``.

    Bounded to the batch's trade_time range (a trade's time never changes): pyiceberg treats an In of
    more than 200 values as "might match" for every file, and would read the whole table per flush.
    """
    ids: dict[str, list[int]] = {}
    for symbol, trade_id in zip(rows["symbol"].to_pylist(), rows["trade_id"].to_pylist(), strict=True):
        ids.setdefault(symbol, []).append(trade_id)
    keys = _any_of(
        [And(_predicate(EqualTo, "symbol", s), _predicate(In, "trade_id", sorted(set(v)))) for s, v in ids.items()]
    )
    low, high = time_range_us(rows)
    in_range = And(_predicate(GreaterThanOrEqual, "trade_time", low), _predicate(LessThanOrEqual, "trade_time", high))
    return And(in_range, keys)


def buckets(rows: pa.Table, bucket_us: int) -> pa.Array:
    """The trade_time bucket of each row (floor of epoch microseconds / ``bucket_us``)."""
    # integer division truncates, which is the floor for the table's times (never before 1970)
    return pc.divide(rows["trade_time"].cast(pa.int64()), bucket_us)


def bucket_filter(touched: list[int], bucket_us: int) -> BooleanExpression:
    """Rows whose trade_time falls in one of the ``touched`` buckets."""
    return _any_of(
        [
            And(
                _predicate(GreaterThanOrEqual, "trade_time", b * bucket_us),
                _predicate(LessThan, "trade_time", (b + 1) * bucket_us),
            )
            for b in touched
        ]
    )


def split_by_bucket(rows: pa.Table, touched: list[int], bucket_us: int) -> list[pa.Table]:
    """A table per touched bucket, then one with every other row (from files that straddled a
    bucket edge): a rewritten bucket never drags its neighbours' rows into the next rewrite."""
    of_row = buckets(rows, bucket_us)
    parts = [rows.filter(pc.equal(of_row, b)) for b in touched]
    parts.append(rows.filter(pc.invert(pc.is_in(of_row, pa.array(touched, pa.int64())))))
    return [_sorted(p) for p in parts if len(p)]


# ------------------------------------------------------------------ commits


def upsert(table: Table, rows: pa.Table, properties: dict[str, str]) -> None:
    """The batch (deduplicated first) replaces the table's rows of its keys: an APPEND when every key
    is new, else one OVERWRITE snapshot swapping the files that hold such keys for their other rows
    plus the batch."""
    batch = latest_per_key(rows)
    row_filter = key_filter(batch)
    keys = batch.select(list(KEY))
    replaced, kept = [], []
    for task in table.scan(row_filter=row_filter).plan_files():
        old = _read(table, [task]).select(batch.column_names).cast(batch.schema)
        rest = old.join(keys, keys=list(KEY), join_type="left anti")
        if len(rest) < len(old):
            replaced.append(task)
            kept.append(_sorted(rest))
    if not replaced:
        with transaction(table) as tx:
            tx.append(batch, snapshot_properties=properties)
        return
    with transaction(table) as tx:
        _replace_files(tx, table, row_filter, replaced, [*(k for k in kept if len(k)), batch], properties)


def overwrite_buckets(table: Table, rows: pa.Table, properties: dict[str, str], bucket_us: int) -> None:
    """One OVERWRITE snapshot: the files of the batch's trade_time buckets rewritten with the batch."""
    touched = sorted(set(buckets(rows, bucket_us).to_pylist()))
    row_filter = bucket_filter(touched, bucket_us)
    tasks = list(table.scan(row_filter=row_filter).plan_files())
    # whole files are replaced, so every row they hold is read, not only the bucket's
    merged = latest_per_key(rows, _read(table, tasks))
    with transaction(table) as tx:
        _replace_files(tx, table, row_filter, tasks, split_by_bucket(merged, touched, bucket_us), properties)


def _read(table: Table, tasks: list[FileScanTask]) -> pa.Table:
    """Every row of the tasks' files."""
    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)


def _sorted(rows: pa.Table) -> pa.Table:
    # by trade_id, as the consumer writes: each file's min/max stats stay tight
    return rows.sort_by([("trade_id", "ascending"), ("symbol", "ascending")])


def _replace_files(
    tx: Transaction,
    table: Table,
    row_filter: BooleanExpression,
    tasks: list[FileScanTask],
    parts: list[pa.Table],
    properties: dict[str, str],
) -> None:
    """One OVERWRITE snapshot in ``tx``: the tasks' files out, a file (or more) per part in."""
    counter = itertools.count(0)
    with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
        # the predicate makes the producer look at every manifest for the files deleted below
        overwrite.delete_by_predicate(row_filter)
        for task in tasks:
            overwrite.delete_data_file(task.file)
        for part in parts:
            # pyiceberg's own writer (as its overwrite uses): pinned at 0.12.0 in constraints.txt
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                df=part,
                io=table.io,
                write_uuid=overwrite.commit_uuid,
                counter=counter,
            ):
                overwrite.append_data_file(data_file)
