"""The lakehouse profile's operations on its stack: ``cleanup`` deletes a run's canary rows with a real
delete commit, a wrong API key or an unauthorized health check exits 2 naming the header setting, a rate
limit is waited out and counted, the Kafka injector writes the Avro the consumer reads, and the Iceberg
probe's REST loads are conditional and by refs against Apache Iceberg's server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField

from pipeline_check.backends.iceberg.changes import ChangeFeed
from pipeline_check.backends.iceberg.metadata import MetadataReader
from pipeline_check.backends.iceberg.probe import RestMetadata
from pipeline_check.canary.tags import RunId
from pipeline_check.stack.local import LocalStack
from tests.e2e.lakehouse import COMPOSE, CONFIG, SHORT_RUN_CHECKS, canary_rows, cli, run_of, settings, table, validate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_cleanup_deletes_a_runs_canaries_and_validation_still_passes(lakehouse: LocalStack) -> None:
    run = run_of(validate(settings(lakehouse), SHORT_RUN_CHECKS, count=50, rate=25))
    config_path = str(CONFIG)
    dry = cli(lakehouse, "cleanup", "-c", config_path, "--run", str(run), "--dry-run")
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


def test_rate_limited_api_is_waited_out_and_counted(lakehouse_reset: LocalStack) -> None:
    lakehouse_reset.ensure("api", {"API_RATE_LIMIT": "1"})  # below what the probe asks: one request per symbol per poll
    outcome = validate(settings(lakehouse_reset), SHORT_RUN_CHECKS, count=50, rate=25)
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
