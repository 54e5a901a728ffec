"""The lakehouse profile end to end, as ``make test`` runs it: Avro in Kafka with its schema in the registry
stand-in, an Iceberg REST catalog over moto S3, a query API behind an API key that serves ids as
"BINANCE-<id>"; a clean run passes, a consumer that rounds decimals fails ``corrupted``. One stack for the
module, on free ports, stopped after it (test_lakehouse_operations.py: cleanup, access, the Kafka injector)."""

from __future__ import annotations

import json

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline_check.core.asyncutil import run_sync
from pipeline_check.runs.driver import Outcome
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.status import Status
from tests.e2e.lakehouse import SHORT_RUN_CHECKS, TOPIC, canary_rows, run_of, settings, table, validate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def clean_run(lakehouse: LocalStack) -> Outcome:
    """One smoke run of the profile as it is declared, judged on every check of its config but throughput:
    each commit through the REST catalog writes several S3 objects, and on a shared, loaded machine how fast
    that goes says more about the machine than about the pipeline (the reference suites judge throughput)."""
    config = settings(lakehouse)
    return validate(config, tuple(t for t in config.sla.thresholds if not t.startswith("throughput")))


def test_lakehouse_pipeline_passes_clean(lakehouse: LocalStack, clean_run: Outcome) -> None:
    clean_run.check()
    assert clean_run.finished.verdict is Status.PASSED
    book = clean_run.book
    assert [book.reached(stage) for stage in book.stages] == [100] * len(book.stages)
    assert book.compared >= 300 and not book.diffs  # kafka (decoded Avro), iceberg and api fields compared
    assert clean_run.result("e2e.p99 < 30s").status is Status.PASSED


def test_each_lakehouse_part_is_what_the_profile_says(lakehouse: LocalStack, clean_run: Outcome) -> None:
    exports = lakehouse.spec.exports
    run = run_of(clean_run)
    # Avro in the Confluent wire format, its schema registered under <topic>-value
    subject = httpx.get(f"{exports['PC_SCHEMA_REGISTRY_URL']}/subjects/{TOPIC}-value/versions/latest", timeout=10)
    assert subject.status_code == 200, subject.text
    assert json.loads(subject.json()["schema"])["name"] == "Trade"
    first = run_sync(_first_record(exports["PC_KAFKA_BOOTSTRAP"]))
    assert first[0] == 0 and int.from_bytes(first[1:5], "big") == subject.json()["id"], first[:8]
    # the table through the REST catalog, its data files in the S3 bucket
    rows = canary_rows(lakehouse, run)
    assert len(rows) == 100
    files = [task.file.file_path for task in table(lakehouse).scan().plan_files()]
    assert files and all(path.startswith("s3://lakehouse/warehouse/") for path in files), files[:3]
    # the API wants the key and serves reformatted ids
    url = f"{exports['PC_API_URL']}/v1/trades"
    query = {"symbol": rows[0]["symbol"], "limit": 1000}
    assert httpx.get(url, params=query, timeout=10).status_code == 401
    assert httpx.get(url, params=query, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 403
    answer = httpx.get(url, params=query, headers={"X-API-Key": exports["PC_API_KEY"]}, timeout=10)
    ids = {record["trade_id"] for record in answer.json()["data"]}
    assert {f"BINANCE-{row['trade_id']}" for row in rows if row["symbol"] == query["symbol"]} <= ids


async def _first_record(bootstrap: str) -> bytes:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value is not None
    value: bytes = record.value
    return value


def test_decimals_rounded_by_the_consumer_fail_corrupted(lakehouse_reset: LocalStack) -> None:
    lakehouse_reset.ensure("consumer", {"UNSAFE_ROUND_PRICE_DECIMALS": "6"})
    outcome = validate(settings(lakehouse_reset), SHORT_RUN_CHECKS, count=50, rate=25)
    corrupted = outcome.result("corrupted == 0")
    assert corrupted.status is Status.FAILED, corrupted.detail
    assert outcome.finished.verdict is Status.FAILED
    moved = {(d.stage, d.field) for diffs in outcome.book.diffs.values() for d in diffs}
    # Kafka holds the exact price (the consumer rounds after reading it); the table and the API do not
    assert moved == {("iceberg", "price"), ("api", "price")}, moved
    assert outcome.result("lost == 0").status is Status.PASSED
