"""The reference pipeline's deliberate faults over a row's life, and its API's time forms, each shown from outside on
the local stack: the Iceberg table read with pyiceberg (every snapshot, by time travel), the API over HTTP, the
consumer group's offsets in Kafka. Driven without the validator: a plain WebSocket feed in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline_check.pytest_plugin import PipelineStack
from pipeline_check.stack.local import LocalStack
from tests.e2e.helpers import api_trades, feed, table_rows, trades, wait_for
from tests.e2e.test_reference_pipeline import current_snapshot_id, symbol, trades_table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUIET_S = 0.5  # seconds without a late change pending, over at least two looks, before the table is read

Sent = tuple[str, dict[int, dict[str, Any]]]  # a symbol and its trades by id


def stream(stack: LocalStack, count: int, rate: float = 2000, first_id: int | None = None) -> Sent:
    """``count`` trades of a new symbol through the feed; returns the symbol and the trades by id."""
    sym = symbol()
    sent = trades(sym, count, first_id=first_id)

    async def run() -> None:
        async with feed(stack.spec.ports["feed"]) as f:
            await f.send(sent, rate=rate)

    asyncio.run(run())
    return sym, {t["t"]: t for t in sent}


def in_table(exports: Mapping[str, str], sym: str, count: int) -> list[dict[str, Any]]:
    """The table's rows of ``sym`` once it holds ``count`` of them (deadline 30 s)."""
    return wait_for(lambda: (rows := table_rows(exports, sym)) and len(rows) >= count and rows, 30, f"{count} rows")


def api_answer(exports: Mapping[str, str], **params: object) -> dict[str, Any]:
    response = httpx.get(f"{exports['PC_API_URL']}/v1/trades", params=params, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def late_changes_pending(stack: LocalStack) -> int:
    response = httpx.get(f"http://127.0.0.1:{stack.spec.ports['consumer']}/health", timeout=5)
    pending: int = response.json()["late_changes_pending"]
    return pending


def settled(stack: LocalStack, exports: Mapping[str, str], sym: str, count: int) -> list[dict[str, Any]]:
    """The table's rows of ``sym`` once it holds ``count`` and the consumer has no rewrite, delete or restore
    left to make (none pending on every look for half a second: the consumer schedules a batch's changes just
    after the commit that adds its rows, so a single look right after that commit could come before them)."""
    in_table(exports, sym, count)
    quiet_since: list[float] = []

    def quiet() -> bool:
        if late_changes_pending(stack):
            quiet_since.clear()
            return False
        quiet_since[:] = quiet_since or [time.monotonic()]
        return time.monotonic() - quiet_since[0] >= QUIET_S

    wait_for(quiet, 30, f"no late change pending for {sym}")
    return table_rows(exports, sym)


@dataclass(frozen=True)
class Version:
    """The rows of one symbol as one snapshot of the table holds them."""

    snapshot_id: int
    operation: str
    timestamp_ms: int
    rows: dict[int, dict[str, Any]]  # trade id -> row
    copies: int  # rows in all (a trade held twice counts twice)
    removed: int  # rows of any symbol the snapshot took out of the table, net of those it put in


def history(exports: Mapping[str, str], sym: str, after: int | None) -> list[Version]:
    """Every snapshot committed after ``after``, oldest first, with ``sym``'s rows in it (time travel)."""
    table = trades_table(exports)
    start = table.snapshot_by_id(after) if after is not None else None
    floor = (start.sequence_number or 0) if start is not None else -1
    versions = []
    for snap in sorted(table.snapshots(), key=lambda s: s.sequence_number or 0):
        if (snap.sequence_number or 0) <= floor or snap.summary is None:
            continue
        rows = table.scan(row_filter=f"symbol == '{sym}'", snapshot_id=snap.snapshot_id).to_arrow().to_pylist()
        by_id = {r["trade_id"]: r for r in rows}
        removed = int(snap.summary.get("deleted-records") or 0) - int(snap.summary.get("added-records") or 0)
        versions.append(
            Version(snap.snapshot_id, snap.summary.operation.value, snap.timestamp_ms, by_id, len(rows), removed)
        )
    return versions


def as_sent(row: Mapping[str, Any], trade: Mapping[str, Any]) -> bool:
    return bool(row["price"] == Decimal(trade["p"]) and row["quantity"] == Decimal(trade["q"]))


@dataclass(frozen=True)
class Life:
    """One trade's row through the table's versions: where it first appeared, and the first later version in
    which it changed (``changed``) or was missing (``gone``) and the next one holding it again (``back``)."""

    first: Version
    changed: Version | None
    gone: Version | None
    back: Version | None


def lives(versions: list[Version], trade_ids: Iterable[int]) -> dict[int, Life]:
    found = {}
    for tid in trade_ids:
        first = next(i for i, v in enumerate(versions) if tid in v.rows)
        row = versions[first].rows[tid]
        later = versions[first + 1 :]
        changed = next((v for v in later if tid in v.rows and v.rows[tid] != row), None)
        gone = next((i for i, v in enumerate(later) if tid not in v.rows), None)
        back = None if gone is None else next((v for v in later[gone:] if tid in v.rows), None)
        found[tid] = Life(versions[first], changed, None if gone is None else later[gone], back)
    return found


# ---------------------------------------------------------------- consumer: committed rows changed later


def test_rewrite_fraction_rewrites_committed_rows_with_a_wrong_price_by_a_later_overwrite(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("consumer", env={"UNSAFE_REWRITE_FRACTION": "0.3", "UNSAFE_REWRITE_AFTER_MS": "1500"})
    start = current_snapshot_id(exports)
    sym, sent = stream(local_stack, 200)
    final = settled(local_stack, exports, sym, 200)
    assert sorted(r["trade_id"] for r in final) == sorted(sent)  # one row per trade: rewritten in place
    changed = {r["trade_id"] for r in final if not as_sent(r, sent[r["trade_id"]])}
    assert 30 <= len(changed) <= 90, len(changed)  # 30 % of 200, binomial sd ~6.5
    for row in final:
        if row["trade_id"] in changed:
            assert row["price"] == Decimal(sent[row["trade_id"]]["p"]) + 1
            assert row["quantity"] == Decimal(sent[row["trade_id"]]["q"])
            assert row["trade_time"].timestamp() * 1000 == pytest.approx(sent[row["trade_id"]]["T"])
    versions = history(exports, sym, start)
    assert all(v.copies == len(v.rows) for v in versions)  # never two copies of a trade
    for tid, life in lives(versions, sent).items():
        # every trade first appeared as sent: a validator comparing only that version sees nothing wrong
        assert as_sent(life.first.rows[tid], sent[tid])
        assert life.gone is None
        if tid not in changed:
            assert life.changed is None
            continue
        assert life.changed is not None and life.changed.operation == "overwrite"
        assert life.changed.timestamp_ms - life.first.timestamp_ms >= 1000, "rewritten before its delay"
    # the API serves the current version
    served = {r["trade_id"]: r for r in api_trades(exports, sym)}
    assert {t for t, r in served.items() if r["price"] != sent[t]["p"]} == changed


def test_delete_fraction_deletes_committed_rows_and_appends_them_again_later(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    env = {"UNSAFE_DELETE_FRACTION": "0.3", "UNSAFE_DELETE_AFTER_MS": "1000", "UNSAFE_RESTORE_AFTER_MS": "2000"}
    local_stack.restart("consumer", env=env)
    start = current_snapshot_id(exports)
    sym, sent = stream(local_stack, 200)
    settled(local_stack, exports, sym, 200)
    versions = history(exports, sym, start)
    final = versions[-1]
    # in the end every trade is there once, as sent: a validator judging only the final state passes it
    assert sorted(final.rows) == sorted(sent) and final.copies == 200
    assert all(as_sent(row, sent[tid]) for tid, row in final.rows.items())
    assert all(v.copies == len(v.rows) for v in versions)
    retracted = {tid: life for tid, life in lives(versions, sent).items() if life.gone is not None}
    assert 30 <= len(retracted) <= 90, len(retracted)  # 30 % of 200, binomial sd ~6.5
    for tid, life in retracted.items():
        assert life.gone is not None and life.back is not None
        assert life.gone.operation == "overwrite"  # copy-on-write: the files rewritten without the rows
        assert life.back.operation == "append" and life.back.rows[tid] == life.first.rows[tid]
        assert life.gone.timestamp_ms - life.first.timestamp_ms >= 500, "deleted before its delay"
        assert life.back.timestamp_ms - life.gone.timestamp_ms >= 1500, "restored before its delay"
    for removal in {life.gone.snapshot_id: life.gone for life in retracted.values() if life.gone}.values():
        # each removing snapshot took out exactly the trades that went missing in it
        gone_in_it = [life for life in retracted.values() if life.gone and life.gone.snapshot_id == removal.snapshot_id]
        assert removal.removed == len(gone_in_it)


def test_keep_every_n_writes_one_trade_in_n_and_acknowledges_the_rest(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("consumer", env={"UNSAFE_KEEP_EVERY_N": "5"})
    sym, sent = stream(local_stack, 500, first_id=5 * 10**11)  # ids in 100 whole blocks of five
    bootstrap = exports["PC_KAFKA_BOOTSTRAP"]
    wait_for(lambda: asyncio.run(group_lag(bootstrap)) == 0, 30, "the consumer group's offsets at the log end")
    rows = wait_for(lambda: table_rows(exports, sym) or None, 10, f"rows of {sym}")
    ids = sorted(r["trade_id"] for r in rows)
    assert len(ids) == 100, len(ids)  # a fifth: 80 % lost although every offset was committed
    assert sorted({i // 5 for i in ids}) == sorted({t // 5 for t in sent})  # one from each block
    assert len({i % 5 for i in ids}) == 5  # not a fixed stride
    assert len(api_trades(exports, sym)) == 100


async def group_lag(bootstrap: str, group: str = "iceberg-writer", topic: str = "market.trades.raw") -> int:
    """Records of ``topic`` past the group's committed offsets (a partition with no commit counts whole)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        (described,) = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        assert partitions, f"topic {topic} has no partitions"
        ends = await reader.end_offsets(partitions)
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        await reader.stop()
        await admin.close()


@pytest.mark.parametrize("shift_ms", [2000, -2000])
def test_a_small_time_shift_moves_each_time_by_exactly_that_much(
    local_stack: LocalStack, pipeline_stack: PipelineStack, shift_ms: int
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("consumer", env={"UNSAFE_SHIFT_TIME_MS": str(shift_ms)})
    sym, sent = stream(local_stack, 50, rate=500)
    rows = in_table(exports, sym, 50)
    assert len(rows) == 50
    for row in rows:
        trade = sent[row["trade_id"]]
        assert round(row["trade_time"].timestamp() * 1000) == trade["T"] + shift_ms
        assert round(row["event_time"].timestamp() * 1000) == trade["E"] + shift_ms
        assert as_sent(row, trade)
    first, last = min(t["T"] for t in sent.values()), max(t["T"] for t in sent.values())
    # the API finds them only in the shifted window: one a validator searching around the send window reaches
    moved = api_answer(exports, symbol=sym, start_time=first + shift_ms, end_time=last + shift_ms + 1)["data"]
    assert sorted(r["trade_id"] for r in moved) == sorted(sent)
    assert all(r["trade_time"] == sent[r["trade_id"]]["T"] + shift_ms for r in moved)
    assert api_answer(exports, symbol=sym, start_time=first, end_time=last + 1)["data"] == []


# ---------------------------------------------------------------- API: time forms and faults


def iso_naive(ms: int) -> str:
    """Epoch ms as the API's ISO-8601 text without a zone (microseconds shown)."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


TIME_FORMS: dict[str, Callable[[int], object]] = {
    "iso": lambda ms: f"{iso_naive(ms)}+00:00",
    "iso_naive": iso_naive,
    "float_s": lambda ms: ms / 1000,
    "ns": lambda ms: ms * 1_000_000,
}


@pytest.mark.parametrize("form", list(TIME_FORMS))
def test_the_api_answers_and_is_asked_in_its_time_form(
    local_stack: LocalStack, pipeline_stack: PipelineStack, form: str
) -> None:
    to_form = TIME_FORMS[form]
    exports = pipeline_stack.exports
    local_stack.restart("api", env={"API_TIME_FORMAT": form})
    sym, sent = stream(local_stack, 40, rate=400)
    in_table(exports, sym, 40)
    times = sorted(t["T"] for t in sent.values())
    start, end = to_form(times[10]), to_form(times[30])  # [10th, 30th): 20 trades
    body = api_answer(exports, symbol=sym, start_time=start, end_time=end)
    assert (body["meta"]["start_time"], body["meta"]["end_time"]) == (start, end)
    assert [r["trade_time"] for r in body["data"]] == [to_form(ms) for ms in sorted(times[10:30], reverse=True)]
    assert all(r["event_time"] == to_form(sent[r["trade_id"]]["E"]) for r in body["data"])
    refused = httpx.get(
        f"{exports['PC_API_URL']}/v1/trades", params={"symbol": sym, "start_time": "yesterday"}, timeout=10
    )
    assert refused.status_code == 422 and f"API_TIME_FORMAT={form}" in refused.json()["error"]


def test_retracted_rows_stop_being_returned_by_the_api_while_the_table_keeps_them(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("api", env={"UNSAFE_API_RETRACT_FRACTION": "0.5", "UNSAFE_API_RETRACT_AFTER_MS": "1000"})
    sym, sent = stream(local_stack, 100)
    in_table(exports, sym, 100)
    first = api_trades(exports, sym)
    assert len(first) == 100  # every trade is returned once
    shown = wait_for(
        lambda: (rows := api_trades(exports, sym)) and len(rows) < 100 and rows, 10, "trades no longer returned"
    )
    gone = set(sent) - {r["trade_id"] for r in shown}
    assert 25 <= len(gone) <= 75, len(gone)  # half of 100, binomial sd 5
    for _ in range(2):  # never again, whatever the query
        again = {r["trade_id"] for r in api_answer(exports, symbol=sym, limit=10_000)["data"]}
        assert not again & gone
    assert len(table_rows(exports, sym)) == 100  # retracted at the API only


def test_an_api_ordering_by_price_under_a_cap_answers_a_page_time_cannot_page(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("api", env={"UNSAFE_API_PRICE_ORDER": "1", "UNSAFE_API_PAGE_CAP": "20"})
    sym, sent = stream(local_stack, 100)
    in_table(exports, sym, 100)
    body = api_answer(exports, symbol=sym, limit=100)
    assert body["meta"]["limit"] == 100 and body["meta"]["count"] == 20
    prices = [Decimal(r["price"]) for r in body["data"]]
    assert prices == sorted((Decimal(t["p"]) for t in sent.values()), reverse=True)[:20]
    times = [r["trade_time"] for r in body["data"]]
    assert times != sorted(times, reverse=True)  # not newest first: the next page has no time to start from


def test_an_api_ignoring_end_time_answers_everything_from_start_time_on(
    local_stack: LocalStack, pipeline_stack: PipelineStack
) -> None:
    exports = pipeline_stack.exports
    local_stack.restart("api", env={"UNSAFE_API_IGNORE_END_TIME": "1"})
    sym, sent = stream(local_stack, 50, rate=500)
    in_table(exports, sym, 50)
    times = sorted(t["T"] for t in sent.values())
    body = api_answer(exports, symbol=sym, start_time=times[10], end_time=times[20])
    assert sorted(r["trade_time"] for r in body["data"]) == times[10:]  # 40, not the 10 asked for
    assert body["meta"]["end_time"] == times[20]
