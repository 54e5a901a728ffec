"""The complete pipeline through the pytest plugin: canaries WS -> API and Kafka -> API, consistency
across stages, schema compliance per stage, field fidelity, malformed input, replayed records."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pyiceberg.catalog import load_catalog
from pyiceberg.types import DecimalType, LongType, StringType, TimestamptzType

from pipeline_check.canary.tags import parse
from pipeline_check.config import PipelineConfig
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.runs.driver import Outcome, run_async
from pipeline_check.stack.local import LocalStack
from tests.e2e.conftest import ConfigVariant
from tests.e2e.helpers import api_trades, topic_records, without_throughput

pytestmark = [pytest.mark.e2e]
STAGES = ("kafka", "consumer", "iceberg", "api")


def test_canaries_from_the_websocket_feed_reach_the_api(validator: Validator) -> None:
    outcome = validator("smoke")
    outcome.check()
    assert outcome.finished.summary.delivered == outcome.finished.summary.injected == 100


def test_canaries_produced_to_kafka_reach_the_api(validator: Validator, config_variant: ConfigVariant) -> None:
    config = config_variant(source='type = "kafka"')
    outcome = validator("smoke", config=config)
    outcome.check()
    summary = outcome.finished.summary
    assert summary.delivered == 100
    # canary symbols are chosen to put one on each partition under every partitioner the topic may use, and
    # the validator's own producer keys them as the pipeline's would: every partition gets canaries
    seen = [c.seen for c in summary.stage["kafka"].shards]
    assert len(seen) == 3 and min(seen) > 0 and sum(seen) == 100, seen


def test_counts_agree_across_stages_for_the_run(validator: Validator) -> None:
    outcome = validator("smoke", rate=50)  # counts only: no rate judged, so 2 s will do
    book = outcome.book
    reached = {stage: book.reached(stage) for stage in STAGES}
    assert reached == dict.fromkeys(STAGES, book.injected), reached
    for stage in STAGES:
        copies = book.copies(stage)
        assert (copies == 1).all(), f"{stage}: copies {np.unique(copies)}"


@pytest.fixture(scope="module")
def run(pipeline_config: PipelineConfig) -> Outcome:
    """One smoke validation shared by this module's schema and fidelity checks (no rate judged: 2 s will do)."""
    return run_sync(run_async(pipeline_config.with_overrides("smoke", rate=50), "smoke"))


DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")


async def read_at(bootstrap: str, topic: str, positions: list[tuple[int, int]]) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        found = []
        for partition, offset in positions:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            record = await asyncio.wait_for(consumer.getone(tp), 10)
            found.append(json.loads(record.value))
        return found
    finally:
        await consumer.stop()


def test_kafka_records_follow_the_binance_trade_schema(run: Outcome, pipeline_stack: PipelineStack) -> None:
    book = run.book
    partitions, offsets = book.refs("kafka")
    positions = [(int(partitions[s]), int(offsets[s])) for s in range(0, book.injected, 25)]
    records = asyncio.run(read_at(pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"], "market.trades.raw", positions))
    types = {"e": str, "E": int, "s": str, "t": int, "p": str, "q": str, "T": int, "m": bool, "M": bool}
    for record in records:
        assert {k: type(v) for k, v in record.items()} == types, record
        assert record["e"] == "trade" and DECIMAL_8.match(record["p"]) and DECIMAL_8.match(record["q"])
        assert parse(record["t"]) is not None and parse(record["t"])[0] == book.run


def test_iceberg_table_schema(pipeline_stack: PipelineStack) -> None:
    exports = pipeline_stack.exports
    catalog = load_catalog(
        "local", type="sql", uri=exports["PC_ICEBERG_CATALOG_URI"], warehouse=exports["PC_ICEBERG_WAREHOUSE"]
    )
    schema = {f.name: (f.field_type, f.required) for f in catalog.load_table("market.trades").schema().fields}
    expected = {
        "symbol": StringType(),
        "trade_id": LongType(),
        "price": DecimalType(18, 8),
        "quantity": DecimalType(18, 8),
        "side": StringType(),
        "event_time": TimestamptzType(),
        "trade_time": TimestamptzType(),
        "ingest_time": TimestamptzType(),
    }
    for name, field_type in expected.items():
        assert name in schema and schema[name][0] == field_type, (name, schema.get(name))
    assert schema["trade_id"][1] and schema["symbol"][1], "symbol and trade_id must be required"


def test_api_records_follow_the_documented_schema(run: Outcome, pipeline_stack: PipelineStack) -> None:
    records = [
        r
        for symbol in run.book.factory.symbols
        for r in api_trades(pipeline_stack.exports, symbol)
        if run.book.run.seq_of(r["trade_id"]) is not None
    ]
    assert len(records) == run.book.injected
    types = {
        "symbol": str, "trade_id": int, "price": str, "quantity": str, "side": str,
        "event_time": int, "trade_time": int, "ingest_time": int,
    }  # fmt: skip
    for record in records:
        assert {k: type(v) for k, v in record.items()} == types, record
        assert DECIMAL_8.match(record["price"]) and DECIMAL_8.match(record["quantity"])
        assert record["side"] in ("buy", "sell") and record["ingest_time"] >= record["trade_time"]
    for symbol in run.book.factory.symbols:
        times = [(r["trade_time"], r["trade_id"]) for r in records if r["symbol"] == symbol]
        assert times == sorted(times, reverse=True), "newest first"


def test_fields_arrive_unchanged_at_every_stage(run: Outcome) -> None:
    assert run.result("corrupted == 0").observed == 0
    assert not run.finished.summary.diffs


def test_a_changed_field_is_reported_as_corrupted(validator: Validator, config_variant: ConfigVariant) -> None:
    """The fidelity check can fail: compare the API's price with the sent quantity."""
    api = 'limit = 5000\nfields = { symbol = "s", price = "p:decimal"'  # the API stage's fields
    config = config_variant((api, api.replace("p:decimal", "q:decimal")))
    outcome = validator("smoke", config=config, rate=50)
    # every canary but the extremes, whose price and quantity are both the type's largest or smallest value
    differ = [
        s for s in range(100) if outcome.book.factory.canary(s, 0).price != outcome.book.factory.canary(s, 0).quantity
    ]
    assert outcome.result("corrupted == 0").observed == len(differ) == 86
    diff = outcome.finished.summary.diffs[0]
    assert (diff.stage, diff.field) == ("api", "price") and Decimal(diff.actual.strip("'")) != Decimal(
        diff.expected.strip("'")
    )
    with pytest.raises(AssertionError, match=r"corrupted == 0: failed, observed 86"):
        outcome.check()


def test_malformed_input_goes_to_the_dlq_and_never_to_the_api(
    inject: Any, pipeline_stack: PipelineStack, run: Outcome
) -> None:
    bootstrap = pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]
    # a canary-range id from the shared run, but a price no decimal(18,8) holds
    bad_id = run.book.run.hi
    bad = json.dumps({"e": "trade", "E": 1, "s": "CANARYUSDT", "t": bad_id, "p": "1e400", "q": "1", "T": 1,
                      "m": True, "M": True})  # fmt: skip

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("market.trades.raw", bad.encode(), key=b"CANARYUSDT")
        finally:
            await producer.stop()

    asyncio.run(produce())
    # canaries sent after it on the same partition (same key) reach the API: the bad one was processed
    inject(20, rate=50).check()
    letters = asyncio.run(topic_records(bootstrap, "market.trades.dlq", lambda v: str(bad_id).encode() in v, 30))
    assert len(letters) == 1 and json.loads(letters[0])["reason"]
    assert bad_id not in {r["trade_id"] for r in api_trades(pipeline_stack.exports, "CANARYUSDT")}


def rewind_group(bootstrap: str, group: str, to: dict[int, int]) -> None:
    """Commit older offsets for ``group`` (it must be empty: the consumer is stopped)."""

    async def commit() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = {TopicPartition("market.trades.raw", p): o for p, o in to.items()}
            consumer.assign(list(tps))
            await consumer.commit(tps)
        finally:
            await consumer.stop()

    asyncio.run(commit())


def test_replayed_records_do_not_duplicate_rows(
    validator: Validator, local_stack: LocalStack, pipeline_stack: PipelineStack, pipeline_config: PipelineConfig
) -> None:
    """Rewinding the group (an operator replaying the topic) must not write the run's rows twice."""
    # duplicates and losses only: no rate judged, so 2 s runs will do
    config = without_throughput(pipeline_config)
    first = validator("smoke", config=config, rate=50)
    first.check()
    local_stack.stop("consumer")
    rewind_group(pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"], "iceberg-writer", first_offsets(first))
    local_stack.start("consumer")
    # the next run's canaries go through after whatever the consumer replays
    second = validator("smoke", config=config, rate=50, settle=1.0)
    second.check()
    exports = pipeline_stack.exports
    catalog = load_catalog(
        "local", type="sql", uri=exports["PC_ICEBERG_CATALOG_URI"], warehouse=exports["PC_ICEBERG_WAREHOUSE"]
    )
    run = first.book.run
    ids = (
        catalog.load_table("market.trades")
        .scan(row_filter=f"trade_id >= {run.lo} AND trade_id <= {run.hi}", selected_fields=("trade_id",))
        .to_arrow()["trade_id"]
        .to_pylist()
    )
    assert len(ids) == len(set(ids)) == first.book.injected, f"{len(ids) - len(set(ids))} duplicated rows"


def first_offsets(outcome: Outcome) -> dict[int, int]:
    """Per partition, the offset of the run's first canary there."""
    offsets: dict[int, int] = {}
    for partition, offset in zip(*outcome.book.refs("kafka"), strict=True):
        offsets[int(partition)] = min(offsets.get(int(partition), int(offset)), int(offset))
    return offsets
