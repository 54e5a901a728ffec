"""The reference pipeline itself (the system under test), driven without the validator: a plain
WebSocket feed on the ingestor's port in, the Iceberg table and the query API out."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest

from pipeline_check.pytest_plugin import PipelineStack
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
