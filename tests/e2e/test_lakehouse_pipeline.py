"""The lakehouse profile end to end (compose/profiles/lakehouse.toml, compose/pipeline.lakehouse.toml): Avro in
Kafka with its schema in the registry stand-in, an Iceberg REST catalog over moto S3, a query API behind an API
key that serves ids as "BINANCE-<id>". One stack for the module, on free ports, stopped after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer
from pyiceberg.catalog import load_catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField

from pipeline_check.asyncutil import run_sync
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.engine import Outcome, run_async
from pipeline_check.probes.iceberg import RestMetadata
from pipeline_check.probes.iceberg_changes import ChangeFeed
from pipeline_check.probes.iceberg_metadata import MetadataReader
from pipeline_check.pytest_plugin import free_ports
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.spec import load_stack, profile_file
from pipeline_check.status import Status
from pipeline_check.tags import RunId

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMPOSE = Path(__file__).parents[2] / "compose"
PROFILE = profile_file("lakehouse", COMPOSE / "stack.toml")
CONFIG = COMPOSE / "pipeline.lakehouse.toml"
TOPIC = "market.trades.raw"
# the checks a short run can conclude (a p99 needs 100 canaries, throughput a steady stream)
SHORT_RUN_CHECKS = ("lost == 0", "duplicates == 0", "corrupted == 0", "incomplete == 0", "coverage == 100%")


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The lakehouse stack for this module (Kafka, S3, REST catalog, registry, consumer, ingestor, API)."""
    declared = load_stack(PROFILE)
    local = LocalStack(
        load_stack(PROFILE, run_dir=tmp_path_factory.mktemp("lakehouse"), ports=free_ports(list(declared.ports)))
    )
    try:
        local.up()
        yield local
    finally:
        local.down()


@pytest.fixture
def stack(lakehouse: LocalStack) -> Iterator[LocalStack]:
    """The module's stack for a test that restarts services; back to its declared state afterwards."""
    yield lakehouse
    lakehouse.reset()


def environment(local: LocalStack, **extra: str) -> dict[str, str]:
    return {**os.environ, **local.spec.exports, **extra}


def settings(local: LocalStack, text: str | None = None, tmp_path: Path | None = None, **env: str) -> PipelineConfig:
    """compose/pipeline.lakehouse.toml (or ``text`` in its place) pointed at the module's stack."""
    path = CONFIG
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "pipeline.toml"
        path.write_text(text)
    return load_config(path, environment(local, **env))


def validate(config: PipelineConfig, checks: tuple[str, ...] | None = None, **load: Any) -> Outcome:
    """A smoke run (100 canaries over 10 s unless ``load`` says otherwise), judged on ``checks`` if given."""
    if checks is not None:
        config = config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": checks})})
    return run_sync(run_async(config.with_overrides("smoke", **load), "smoke"))


def table(local: LocalStack) -> Table:
    config = settings(local)
    iceberg = config.stage("iceberg")
    assert iceberg is not None
    props: dict[str, str] = iceberg.settings.catalog  # type: ignore[attr-defined]
    return load_catalog("lakehouse", **props).load_table("market.trades")


def canary_rows(local: LocalStack, run: RunId) -> list[dict[str, Any]]:
    scan = table(local).scan(row_filter=f"trade_id >= {run.lo} and trade_id <= {run.hi}")
    rows: list[dict[str, Any]] = scan.to_arrow().to_pylist()
    return rows


def cli(local: LocalStack, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``pipeline-check ARGS`` against the module's stack (reports a config names go under ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_check.cli", *args],
        cwd=cwd,
        env=environment(local, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_of(outcome: Outcome) -> RunId:
    book = outcome.book
    return book.run


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


def test_decimals_rounded_by_the_consumer_fail_corrupted(stack: LocalStack) -> None:
    stack.ensure("consumer", {"UNSAFE_ROUND_PRICE_DECIMALS": "6"})
    outcome = validate(settings(stack), SHORT_RUN_CHECKS, count=50, rate=25)
    corrupted = outcome.result("corrupted == 0")
    assert corrupted.status is Status.FAILED, corrupted.detail
    assert outcome.finished.verdict is Status.FAILED
    moved = {(d.stage, d.field) for diffs in outcome.book.diffs.values() for d in diffs}
    # Kafka holds the exact price (the consumer rounds after reading it); the table and the API do not
    assert moved == {("iceberg", "price"), ("api", "price")}, moved
    assert outcome.result("lost == 0").status is Status.PASSED


def test_cleanup_deletes_a_runs_canaries_and_validation_still_passes(lakehouse: LocalStack) -> None:
    run = run_of(validate(settings(lakehouse), SHORT_RUN_CHECKS, count=50, rate=25))
    config_path = str(CONFIG)
    dry = cli(lakehouse, "cleanup", "-c", config_path, "--run", str(run))
    assert dry.returncode == 0, dry.stderr
    assert "50 canary rows of 1 run would be deleted (dry run" in dry.stdout, dry.stdout
    assert f"{run}         50 rows" in dry.stdout, dry.stdout
    assert len(canary_rows(lakehouse, run)) == 50  # a dry run changes nothing
    everything = cli(lakehouse, "cleanup", "-c", config_path, "--all-canaries")
    assert everything.returncode == 0 and str(run) in everything.stdout, everything.stdout + everything.stderr

    applied = cli(lakehouse, "cleanup", "-c", config_path, "--run", str(run), "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "deleted 50 canary rows in snapshot" in applied.stdout, applied.stdout
    assert canary_rows(lakehouse, run) == []
    current = table(lakehouse).current_snapshot()
    assert current is not None and current.summary is not None
    assert current.summary.operation.value in ("delete", "overwrite")
    assert current.summary["pipeline-check.cleanup"] == str(run)
    again = cli(lakehouse, "cleanup", "-c", config_path, "--run", str(run), "--apply")
    assert again.returncode == 0 and f"no canary rows of {run}" in again.stdout, again.stdout

    validate(settings(lakehouse), SHORT_RUN_CHECKS, count=50, rate=25).check()


def test_wrong_api_key_exits_2_naming_the_header_setting(lakehouse: LocalStack, tmp_path: Path) -> None:
    args = ("validate", "-c", str(CONFIG), "--count", "20", "--rate", "20")
    done = cli(lakehouse, *args, cwd=tmp_path, PC_API_KEY="not-the-key")
    assert done.returncode == 2, done.stdout + done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    assert "stages.api.headers={'X-API-Key': '***'}" in error[0] and "HTTP 403" in error[0], error
    assert "not-the-key" not in done.stdout + done.stderr


def test_unauthorized_health_check_stops_the_run_before_injecting(lakehouse: LocalStack, tmp_path: Path) -> None:
    text = CONFIG.read_text().replace('health = "/health"', 'health = "/v1/trades?symbol=BTCUSDT&limit=1"')
    text = text.replace('headers = { X-API-Key = "${PC_API_KEY:-lakehouse-demo-key}" }', "headers = {}")
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    done = cli(lakehouse, "validate", "-c", str(path), "--count", "20", "--rate", "20", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "stages.api.headers={} (dict)" in done.stderr and "HTTP 401" in done.stderr, done.stderr
    assert "injected" not in done.stdout  # refused at the health check, before any canary


def test_rate_limited_api_is_waited_out_and_counted(stack: LocalStack) -> None:
    stack.ensure("api", {"API_RATE_LIMIT": "1"})  # below what the probe asks: one request per symbol per poll
    outcome = validate(settings(stack), SHORT_RUN_CHECKS, count=50, rate=25)
    outcome.check()
    notes = [n for n in outcome.finished.notes if n.startswith("API answered 429 (rate limited)")]
    assert len(notes) == 1, outcome.finished.notes
    assert int(notes[0].split(" times")[0].rsplit(" ", 1)[1]) > 0, notes


def test_kafka_injector_writes_avro_the_consumer_reads(lakehouse: LocalStack, tmp_path: Path) -> None:
    text = CONFIG.read_text()
    start, end = text.index("[source]\n"), text.index("\n[messages]")
    # the format, registry and topic come from stages.kafka; the schema file is registered under <topic>-value
    source = f'[source]\ntype = "kafka"\nschema = "{COMPOSE / "schemas" / "trade.avsc"}"\n'
    config = settings(lakehouse, text[:start] + source + text[end:], tmp_path)
    assert config.source.settings.format == "avro"  # type: ignore[attr-defined]
    outcome = validate(config, SHORT_RUN_CHECKS, count=50, rate=25)
    outcome.check()
    assert outcome.book.compared >= 150 and not outcome.book.diffs


def test_rest_tables_load_conditionally_and_by_refs(lakehouse: LocalStack) -> None:
    """The Iceberg probe's REST loads against Apache Iceberg's server: nothing new is a 304 (the same table back),
    one commit is a refs-only answer, several commits one full load; the change feed sees every canary."""
    catalog = load_catalog("probe", **table(lakehouse).catalog.properties)
    namespace = f"probe_{uuid.uuid4().hex[:8]}"
    catalog.create_namespace(namespace)
    schema = Schema(NestedField(1, "trade_id", LongType(), required=True))
    writer = catalog.create_table(f"{namespace}.trades", schema=schema)
    run = RunId.new()

    def commit(*seqs: int) -> None:
        writer.append(pa.Table.from_pylist([{"trade_id": run.tag(s)} for s in seqs], schema=schema.as_arrow()))

    commit(0)
    watched = catalog.load_table(f"{namespace}.trades")
    reader = MetadataReader(s.snapshot_id for s in watched.snapshots())
    rest = RestMetadata(watched, reader)
    feed = ChangeFeed("trade_id", run.lo, run.hi)
    first = watched.current_snapshot()
    assert first is not None
    feed.seek(watched, first)
    watched, _ = rest.load(watched, feed.snapshot_id)  # the first answer brings the ETag

    def poll() -> tuple[Table, list[int]]:
        loaded, new = rest.load(watched, feed.snapshot_id)
        tags = [tag for change in feed.poll(loaded) for tag, step in change.delta.items() if step > 0]
        reader.handled |= new
        return loaded, sorted(tags)

    same, tags = poll()
    assert same is watched and tags == [] and rest.not_modified == 1  # 304: nothing read, nothing new
    commit(1)
    watched, tags = poll()
    assert tags == [run.tag(1)] and rest.full_loads == 0  # its parent is the feed's snapshot: refs were enough
    assert len(watched.metadata.snapshots) == 1  # only the new one was validated
    commit(2)
    commit(3)
    commit(4)
    watched, tags = poll()
    assert tags == [run.tag(2), run.tag(3), run.tag(4)] and rest.full_loads == 1
    assert rest.fallbacks == 0
