"""The reference pipeline itself (the system under test), driven without the validator: a plain
WebSocket feed on the ingestor's port in, the Iceberg table and the query API out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.table import Table

from pipeline_check.pytest_plugin import PipelineStack
from pipeline_check.stack.local import LocalStack
from tests.e2e.helpers import api_trades, feed, table_rows, topic_records, trades, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def symbol() -> str:
    """A symbol of this test alone: tests share one stack and isolate by data, not by restarts."""
    return "T" + uuid.uuid4().hex[:9].upper()


def side(maker: bool) -> str:
    return "sell" if maker else "buy"


def test_trades_come_back_from_the_api_unchanged(pipeline_stack: PipelineStack) -> None:
    stack = pipeline_stack.require_local()
    sym = symbol()
    sent = trades(sym, 200)

    async def scenario() -> None:
        async with feed(stack.spec.ports["feed"]) as f:
            await f.send(sent, rate=500)

    asyncio.run(scenario())
    got = wait_for(
        lambda: (rows := api_trades(pipeline_stack.exports, sym)) and len(rows) >= len(sent) and rows,
        30,
        f"{len(sent)} trades of {sym} from /v1/trades",
    )
    by_id = {r["trade_id"]: r for r in got}
    assert len(got) == len(by_id) == len(sent)
    for t in sent:
        r = by_id[t["t"]]
        assert (r["symbol"], r["side"]) == (t["s"], side(t["m"]))
        # decimals exact, in the 8-decimal text the API promises
        assert r["price"] == t["p"] and Decimal(r["price"]) == Decimal(t["p"])
        assert r["quantity"] == t["q"] and Decimal(r["quantity"]) == Decimal(t["q"])
        assert r["trade_time"] == t["T"]


def test_consumer_killed_mid_stream_writes_each_trade_exactly_once(pipeline_stack: PipelineStack) -> None:
    stack = pipeline_stack.require_local()
    sym = symbol()
    sent = trades(sym, 5000)
    ids = {t["t"] for t in sent}

    async def crash_and_restart() -> None:
        await asyncio.to_thread(stack.kill, "consumer")  # SIGKILL: no flush, no commit
        await asyncio.to_thread(stack.start, "consumer")

    async def scenario() -> None:
        async with feed(stack.spec.ports["feed"]) as f:
            await f.send(sent, rate=2500, at=2500, action=crash_and_restart)

    asyncio.run(scenario())
    rows = wait_for(
        lambda: (rows := table_rows(pipeline_stack.exports, sym)) and len(rows) >= len(sent) and rows,
        60,
        f"{len(sent)} rows of {sym} in the table after the consumer restart",
    )
    wait_for(lambda: stack.health("consumer").ok, 10, "consumer healthy")
    table_ids = [r["trade_id"] for r in table_rows(pipeline_stack.exports, sym)]
    assert len(table_ids) == len(sent), f"{len(table_ids) - len(sent)} duplicate rows"
    assert set(table_ids) == ids
    assert len(rows) == len(set(table_ids)) == 5000
    from_api = api_trades(pipeline_stack.exports, sym)
    assert len(from_api) == 5000 and {r["trade_id"] for r in from_api} == ids


def test_malformed_event_lands_in_the_dlq_and_never_in_the_table(pipeline_stack: PipelineStack) -> None:
    stack = pipeline_stack.require_local()
    sym = symbol()
    good_before, good_after = trades(sym, 2, seed=1)
    bad = {**good_before, "t": good_before["t"] + 100, "p": "not-a-price"}
    good_after["t"] = good_before["t"] + 200

    async def scenario() -> list[bytes]:
        async with feed(stack.spec.ports["feed"]) as f:
            await f.send([good_before, bad, good_after], rate=100)
        marker = str(bad["t"]).encode()  # the original event rides escaped inside the DLQ record
        return await topic_records(
            pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"], "market.trades.dlq", lambda v: marker in v, 30
        )

    dead = asyncio.run(scenario())
    assert len(dead) == 1, f"expected the malformed event once in the DLQ, found {len(dead)}"
    letter = json.loads(dead[0])
    assert "p" in letter["reason"] or "price" in letter["reason"], letter["reason"]
    assert json.loads(letter["value"]) == bad
    # the trade after it reached the table: the bad one had its chance and is not there
    rows = wait_for(
        lambda: (rows := table_rows(pipeline_stack.exports, sym)) and len(rows) >= 2 and rows,
        30,
        "the two valid trades in the table",
    )
    assert sorted(r["trade_id"] for r in rows) == [good_before["t"], good_after["t"]]
    assert bad["t"] not in {r["trade_id"] for r in api_trades(pipeline_stack.exports, sym)}


# ---------------------------------------------------------------- write modes (WRITE_MODE)


def trades_table(exports: Mapping[str, str]) -> Table:
    catalog = load_catalog(
        "local", type="sql", uri=exports["PC_ICEBERG_CATALOG_URI"], warehouse=exports["PC_ICEBERG_WAREHOUSE"]
    )
    return catalog.load_table("market.trades")


def snapshots_after(table: Table, snapshot_id: int | None) -> list[dict[str, Any]]:
    """Operation and deleted-record count of each snapshot committed after ``snapshot_id``."""
    start = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    after = [s for s in table.snapshots() if start is None or (s.sequence_number or 0) > (start.sequence_number or 0)]
    return [
        {
            "operation": s.summary.operation.value,
            "deleted": int(s.summary.get("deleted-records") or 0),
        }
        for s in after
        if s.summary is not None
    ]


def current_snapshot_id(exports: Mapping[str, str]) -> int | None:
    snapshot = trades_table(exports).current_snapshot()
    return None if snapshot is None else snapshot.snapshot_id


@pytest.mark.parametrize("mode", ["upsert", "overwrite"])
def test_rewriting_write_modes_keep_one_row_per_trade_through_redelivery_and_a_kill(
    local_stack: LocalStack, pipeline_stack: PipelineStack, mode: str
) -> None:
    exports = pipeline_stack.exports
    env = {"WRITE_MODE": mode, "REDELIVER_LAST_FLUSH": "1"}
    local_stack.restart("consumer", env=env)
    sym = symbol()
    sent = trades(sym, 2000)
    more = trades(sym, 100, first_id=sent[-1]["t"] + 1)
    ids = {t["t"] for t in sent + more}
    first = current_snapshot_id(exports)

    async def crash_and_restart() -> None:
        await asyncio.to_thread(local_stack.kill, "consumer")  # SIGKILL: no flush, no commit
        await asyncio.to_thread(local_stack.start, "consumer", env)

    async def stream() -> None:
        async with feed(local_stack.spec.ports["feed"]) as f:
            await f.send(sent, rate=2000, at=1000, action=crash_and_restart)

    asyncio.run(stream())
    wait_for(lambda: len(table_rows(exports, sym)) >= len(sent) or None, 60, f"{len(sent)} rows of {sym}")
    # a flush after the restart: it carries the previous flush's rows again
    second = current_snapshot_id(exports)

    async def trickle() -> None:
        async with feed(local_stack.spec.ports["feed"]) as f:
            await f.send(more, rate=200)

    asyncio.run(trickle())
    wait_for(lambda: len(table_rows(exports, sym)) >= len(ids) or None, 30, f"{len(ids)} rows of {sym}")
    table_ids = Counter(r["trade_id"] for r in table_rows(exports, sym))
    assert set(table_ids) == ids and max(table_ids.values()) == 1, f"{table_ids.total() - len(ids)} extra rows"
    from_api = api_trades(exports, sym)
    assert len(from_api) == len(ids) and {r["trade_id"] for r in from_api} == ids
    table = trades_table(exports)
    rewrites = snapshots_after(table, second)
    assert sum(s["deleted"] for s in rewrites) > 0, f"re-delivered rows were not rewritten: {rewrites}"
    operations = {s["operation"] for s in snapshots_after(table, first)}
    if mode == "overwrite":
        assert operations == {"overwrite"}, "new rows must only arrive through overwrite snapshots"
    else:
        assert "append" in operations and operations & {"delete", "overwrite"}, operations
