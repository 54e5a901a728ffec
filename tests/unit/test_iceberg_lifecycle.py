"""The Iceberg probe follows a canary row's whole life on a real table (a pyiceberg SqlCatalog on SQLite):
a row rewritten later with another price by an overwrite is corrupted, naming the old and the new value; a
row deleted and appended again is retracted, restored after the time it was gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType

from pipeline_check.backends.iceberg.probe import IcebergProbe, IcebergSettings
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.clock import Clock
from pipeline_check.trace.book import TraceBook
from pipeline_check.verdict.summary import InjectionStats, summarise
from tests.unit.conftest import route_of
from tests.unit.test_iceberg_changes import make_table

RUN = RunId(5151)
SCHEMA = Schema(
    NestedField(1, "trade_id", LongType(), required=True),
    NestedField(2, "price", StringType(), required=False),
)


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return make_table(tmp_path, SCHEMA)


def rows(book: TraceBook, *seqs: int, bump: int = 0) -> pa.Table:
    prices = [
        str(int(book.factory.canary(s, 0).price.split(".")[0]) + bump)
        + "."
        + book.factory.canary(s, 0).price.split(".")[1]
        for s in seqs
    ]
    return pa.table(
        {"trade_id": pa.array([RUN.tag(s) for s in seqs], pa.int64()), "price": pa.array(prices, pa.string())},
        schema=SCHEMA.as_arrow(),
    )


class Looks:
    """A probe on ``table`` and a book of four canaries, looked through at times the test sets."""

    def __init__(self, table: Table, tmp_path: Path) -> None:
        self.clock = Clock()
        self.book = TraceBook(
            RUN, TradeFactory(RUN, seed=1, count=4, symbols=("CANARYUSDT",)), route_of(("iceberg",)), self.clock
        )
        for seq in range(4):
            self.book.inject(seq, 1.0 + seq)
        settings = IcebergSettings(
            catalog={"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/warehouse"},
            catalog_name="local", table="market.trades", fields={"price": "p:decimal"},
        )  # fmt: skip
        self.probe = IcebergProbe(settings, ProbeContext("iceberg", "source", self.clock, RUN, self.book, print))
        asyncio.run(self.probe.start())

    def look(self, at: float) -> None:
        _, changes = self.probe.poll()
        self.probe._record(at, changes)


def test_a_row_rewritten_with_another_price_is_corrupted(table: Table, tmp_path: Path) -> None:
    looks = Looks(table, tmp_path)
    table.append(rows(looks.book, 0, 1, 2, 3))
    looks.look(5.0)
    assert looks.book.reached("iceberg") == 4 and not looks.book.diffs  # as sent
    table.overwrite(rows(looks.book, 2, bump=1), overwrite_filter=EqualTo("trade_id", RUN.tag(2)))
    looks.look(7.5)
    (diff,) = looks.book.diffs[2]
    assert (diff.stage, diff.field, diff.previous) == ("iceberg", "price", diff.expected)
    assert diff.changed_after_s == pytest.approx(2.5) and diff.actual != diff.expected
    assert not looks.book.retractions("iceberg")[0].any()  # replaced in one snapshot: never gone
    table.append(rows(looks.book, 3))  # a second copy of an unchanged row: a duplicate, not a new version
    looks.look(8.0)
    assert set(looks.book.diffs) == {2}


def test_a_row_deleted_and_appended_again_is_retracted_and_restored(table: Table, tmp_path: Path) -> None:
    looks = Looks(table, tmp_path)
    table.append(rows(looks.book, 0, 1, 2, 3))
    looks.look(5.0)
    table.delete(EqualTo("trade_id", RUN.tag(1)))
    looks.look(6.0)
    table.append(rows(looks.book, 1))
    looks.look(9.1)
    gone, _, restored_after = looks.book.retractions("iceberg")
    assert gone.tolist() == [0, 1, 0, 0] and restored_after[1] == pytest.approx(3.1)
    summary = summarise(looks.book, InjectionStats(4, 0, 1.0, 1.0, 0.0, 0), settle_s=0.0)
    assert summary.retracted == 1 and [r.text for r in summary.retractions] == ["retracted, restored after 3.1s"]
