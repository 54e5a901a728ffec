"""Canary tags inside text in an Iceberg table (``BINANCE-<tag>``): the change feed follows them, file statistics
still skip other runs' files, the passive sampler and cleanup work on such a table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType

from pipeline_check.backends.cleanup import Selection
from pipeline_check.backends.iceberg.changes import ChangeFeed
from pipeline_check.backends.iceberg.cleanup import IcebergCleanup
from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.backends.iceberg.sampler import IcebergSampler
from pipeline_check.backends.iceberg.tag_filter import TagFilter, literal_start
from pipeline_check.backends.sampler import SamplerContext
from pipeline_check.canary.tags import RunId
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError
from pipeline_check.verdict.response_times import ResponseTimes
from tests.unit.test_iceberg_changes import counted, deltas, make_table

SCHEMA = Schema(
    NestedField(1, "trade_id", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=False),
    NestedField(3, "event_time", LongType(), required=False),
)
RUN, OTHER = RunId(2_000_000), RunId(1_000_000)  # runs 3 hours apart: their texts differ in the kept 16 characters


def rows(*ids: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"trade_id": i, "symbol": "CANARYUSDT", "event_time": 1_700_000_000_000} for i in ids],
        schema=SCHEMA.as_arrow(),
    )


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return make_table(tmp_path, SCHEMA)


def text_feed(**form: str) -> ChangeFeed:
    tags = TagFilter("trade_id", RUN.lo, RUN.hi, **form)  # type: ignore[arg-type]
    return ChangeFeed("trade_id", RUN.lo, RUN.hi, ("symbol",), tags=tags)


@pytest.mark.parametrize(
    ("form", "text"),
    [({"pattern": "BINANCE-{tag}"}, "BINANCE-{}"), ({"regex": r"^binance:(\d+)$"}, "binance:{}"),
     ({"pattern": "T{tag}-X"}, "T{}-X"), ({"regex": r"^(?P<ex>\w+)-(?P<tag>\d+)"}, "ex-{}")],
)  # fmt: skip
def test_the_feed_follows_canaries_in_formatted_text(table: Table, form: dict[str, str], text: str) -> None:
    f = text_feed(**form)
    decoy = text.format(RUN.tag(0)) + "-later"  # sorts inside the run's range, but is not one of its ids
    table.append(rows(text.format(RUN.tag(0)), text.format(RUN.tag(5)), text.format(OTHER.tag(1)), "BINANCE-5", decoy))
    ((operation, delta),) = deltas(f.poll(table))
    anchored = "pattern" in form or "$" in form["regex"]  # an unanchored regex also reads the decoy's digits
    expected = {RUN.tag(0): 1 if anchored else 2, RUN.tag(5): 1}
    assert (operation, delta) == ("append", expected)


def test_other_runs_files_are_skipped_by_their_text_statistics(table: Table) -> None:
    f = text_feed(pattern="BINANCE-{tag}")
    table.append(rows(*(f"BINANCE-{OTHER.tag(s)}" for s in range(50)), "BINANCE-12345"))
    watched, io = counted(table)
    assert deltas(f.poll(watched)) == [("append", {})]
    assert [Path(p).suffix for p in io.opened] == [".avro", ".avro"]  # the data file was never opened
    table.append(rows(f"BINANCE-{RUN.tag(3)}"))
    watched, io = counted(table)
    assert deltas(f.poll(watched)) == [("append", {RUN.tag(3): 1})]
    assert [Path(p).suffix for p in io.opened] == [".avro", ".avro", ".parquet"]


def test_pushed_down_predicates() -> None:
    pattern = TagFilter("trade_id", RUN.lo, RUN.hi, pattern="BINANCE-{tag}")
    assert str(pattern.expression()) == (
        f"And(left=GreaterThanOrEqual(term=Reference(name='trade_id'), literal=literal('BINANCE-{RUN.lo}')), "
        f"right=LessThanOrEqual(term=Reference(name='trade_id'), literal=literal('BINANCE-{RUN.hi}')))"
    )
    regex = TagFilter("trade_id", RUN.lo, RUN.hi, regex=r"^binance:(\d+)")
    shared = str(RUN.lo)[: next(i for i, (a, b) in enumerate(zip(str(RUN.lo), str(RUN.hi), strict=True)) if a != b)]
    expected = f"StartsWith(term=Reference(name='trade_id'), literal=literal('binance:{shared}'))"
    assert str(regex.expression()) == expected
    loose = TagFilter("trade_id", RUN.lo, RUN.hi, regex=r"canary-(\d+)")
    assert not loose.prunes and str(loose.expression()) == "AlwaysTrue()"


@pytest.mark.parametrize(
    ("regex", "start"),
    [(r"^BINANCE-(\d+)$", ("BINANCE-", True)), (r"^ex\:\.(?P<tag>\d+)", ("ex:.", True)), (r"^ab?c(\d+)", ("a", False)),
     (r"^ab+(\d+)", ("ab", False)), (r"^a(x)(?P<tag>\d+)", ("a", False)), (r"^a(\d+)|^b(\d+)", ("", False)),
     (r"id=(\d+)", ("", False)), (r"^\d(\d+)", ("", False))],
)  # fmt: skip
def test_the_literal_start_of_a_regex_is_only_what_every_match_starts_with(regex: str, start: tuple[str, bool]) -> None:
    assert literal_start(regex) == start


def test_a_text_tag_setting_needs_a_text_column_and_the_other_way_round(table: Table) -> None:
    table.append(rows("BINANCE-1"))
    with pytest.raises(ConfigError, match=r"tag_column='trade_id' \(str\): is a string column .*or set tag_pattern"):
        ChangeFeed("trade_id", RUN.lo, RUN.hi).poll(table)
    with pytest.raises(ConfigError, match=r"tag_column='event_time' \(str\): is a long column .*, not text"):
        tags = TagFilter("event_time", RUN.lo, RUN.hi, pattern="{tag}")
        ChangeFeed("event_time", RUN.lo, RUN.hi, tags=tags).poll(table)


def settings(tmp_path: Path) -> IcebergSettings:
    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/warehouse"}
    return IcebergSettings(catalog=catalog, catalog_name="local", table="market.trades", tag_pattern="BINANCE-{tag}")


def test_cleanup_deletes_exactly_the_canaries_of_a_text_tag_table(table: Table, tmp_path: Path) -> None:
    decoy = f"BINANCE-{RUN.tag(0)}-later"
    table.append(rows("BINANCE-1", f"BINANCE-{RUN.tag(0)}", f"BINANCE-{RUN.tag(1)}", decoy))
    table.append(rows(*(f"BINANCE-{OTHER.tag(s)}" for s in range(3))))
    cleanup = IcebergCleanup(settings(tmp_path), "stages.iceberg")
    assert cleanup.plan(Selection.every_canary()).rows_per_run == {OTHER: 3, RUN: 2}
    found = cleanup.plan(Selection.of_run(str(RUN)))
    done = cleanup.delete(found)
    assert (done.rows, done.left) == (2, 0)
    table.refresh()
    left = sorted(table.scan().to_arrow().column("trade_id").to_pylist())
    assert left == sorted(["BINANCE-1", decoy, *(f"BINANCE-{OTHER.tag(s)}" for s in range(3))])


def test_the_passive_sampler_takes_the_text_tag_settings(table: Table, tmp_path: Path) -> None:
    table.append(rows("BINANCE-1", f"BINANCE-{RUN.tag(0)}"))
    ctx = SamplerContext("iceberg", Clock(), lambda _: None, ResponseTimes(), ("BTCUSDT",), "event_time", 1.0)
    sampler = IcebergSampler(settings(tmp_path), ctx)
    asyncio.run(sampler.start())
    reading = asyncio.run(sampler.sample())
    assert "freshness" in reading.values and reading.detail.endswith("newest event_time by file statistics")
