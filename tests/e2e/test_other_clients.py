"""Pipelines built on other Kafka clients and schemas, on the local stack: a librdkafka producer's lz4 topic of 40
partitions covered under the partitioner ``auto`` finds, every codec written by the Kafka injector and read back,
a codec this install cannot read (exit 2), string trade ids in Iceberg, and canaries in a foreign Avro schema
through a ``[source.record]`` template."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pyiceberg.catalog import load_catalog
from pyiceberg.types import StringType

from pipeline_check.backends.cleanup import Selection
from pipeline_check.backends.kafka.codecs import AvroCodec, to_comparable
from pipeline_check.backends.kafka.partitioners import HASHES
from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.backends.kafka.topic_sampler import KafkaTopicSampler
from pipeline_check.backends.sampler import SamplerContext
from pipeline_check.canary.tags import label, parse
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.core.clock import Clock
from pipeline_check.pytest_plugin import PipelineStack, Validator
from pipeline_check.runs.cleanup import stage_cleanup
from pipeline_check.stack.local import LocalStack
from pipeline_check.verdict.response_times import ResponseTimes
from pipeline_check.verdict.status import Status
from tests.e2e.conftest import CONFIG
from tests.e2e.test_reference_kafka import codecs_of, interleaved, keyed_records, send
from tests.e2e.test_reference_pipeline import symbol
from tests.e2e.test_schema_registry import StandIn
from tests.support.foreign import FOREIGN, TEMPLATE
from tests.support.registry import RegistryAdmin

# the consumer's drop rule, imported as the services run (`python -m services.X` from compose/)
COMPOSE = Path(__file__).resolve().parents[2] / "compose"
if str(COMPOSE) not in sys.path:
    sys.path.insert(0, str(COMPOSE))

from services.faults import DROP_KEY, picked  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECKS = ("lost == 0", "duplicates == 0", "corrupted == 0", "incomplete == 0", "coverage == 100%")


def variant(pipeline_stack: PipelineStack, tmp_path: Path, *replacements: tuple[str, str]) -> PipelineConfig:
    """compose/pipeline.toml's source, Kafka and Iceberg stages and load (these tests are not about the API), text
    replaced, judged on ``CHECKS``."""
    text = CONFIG.read_text()
    text = text[: text.index("[stages.api]")] + text[text.index("[load]") : text.index("[sla]")]  # no API, no scenarios
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    config = load_config(path, pipeline_stack.env())
    return config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": CHECKS})})


@pytest.fixture
def topic(pipeline_stack: PipelineStack) -> Iterator[str]:
    """A topic of this test alone (3 partitions), deleted after it."""
    name = f"clients.{uuid.uuid4().hex[:8]}"
    bootstrap = pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]

    async def admin(action: str) -> None:
        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await client.start()
        try:
            if action == "create":
                await client.create_topics([NewTopic(name, 3, 1)])
            else:
                await client.delete_topics([name])
        finally:
            await client.close()

    asyncio.run(admin("create"))
    yield name
    asyncio.run(admin("delete"))


# -- a librdkafka producer, lz4, 40 partitions, the partitioner found from the topic's records -------------------


def test_a_librdkafka_lz4_topic_of_40_partitions_is_covered_under_the_partitioner_auto_finds(
    local_stack: LocalStack, pipeline_stack: PipelineStack, validator: Validator, tmp_path: Path
) -> None:
    raw = "market.trades.raw40auto"
    env = {"RAW_TOPIC": raw, "RAW_TOPIC_PARTITIONS": "40"}
    local_stack.restart("consumer", env=env)  # creates the topic with 40 partitions
    local_stack.restart("ingestor", env={**env, "PRODUCER_CLIENT": "confluent"})  # librdkafka: CRC32, lz4
    # the pipeline's own traffic before the run: 30 symbols the ingestor keys and librdkafka places
    symbols = [symbol() for _ in range(30)]
    send(local_stack, interleaved(symbols, 4))
    bootstrap = pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]
    asyncio.run(keyed_records(bootstrap, raw, {s.encode() for s in symbols}, 120))
    config = variant(pipeline_stack, tmp_path, ('topic = "market.trades.raw"', f'topic = "{raw}"'))
    outcome = validator(config=config, count=200, rate=100, drain_timeout="30s")
    outcome.check()
    (found,) = [n for n in outcome.finished.notes if n.startswith("stages.kafka.partitioner auto:")]
    assert found.startswith("stages.kafka.partitioner auto: crc32 (crc32: 120 of 120 keyed records agree"), found
    assert "(30 keys over 40 partitions" in found
    book = outcome.book
    assert len(book.factory.symbols) == 40  # one symbol per partition under CRC32
    shards = outcome.finished.summary.stage["kafka"].shards
    assert len(shards) == 40 and all(c.seen == 5 for c in shards), [(c.shard, c.seen) for c in shards]
    canaries = asyncio.run(keyed_records(bootstrap, raw, {s.encode() for s in book.factory.symbols}, 200))
    assert codecs_of(local_stack.spec.run_dir, canaries) == {"lz4"}


# -- compressed batches: written by the injector, read by the probe and the passive sampler ----------------------


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_the_kafka_injector_writes_each_codec_and_the_probe_and_sampler_read_it(
    local_stack: LocalStack, pipeline_stack: PipelineStack, validator: Validator, tmp_path: Path, topic: str, codec: str
) -> None:
    text = f'[source]\ntype = "kafka"\ntopic = "{topic}"\ncompression = "{codec}"\n'
    text += f'[stages.kafka]\nbootstrap = "{pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]}"\ntopic = "{topic}"\n'
    text += 'fields = { s = "s", p = "p:decimal", q = "q:decimal", T = "T" }\n'  # the batches decode to what was sent
    text += '[sla]\nthresholds = ["lost == 0", "corrupted == 0", "coverage == 100%"]\n'
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    config = load_config(path, {})
    outcome = validator(config=config, count=30, rate=300, background_rate=100)
    outcome.check()
    keys = {s.encode() for s in outcome.book.factory.symbols}
    records = asyncio.run(keyed_records(config.stage("kafka").settings.bootstrap, topic, keys, 30))  # type: ignore[union-attr]
    assert codecs_of(local_stack.spec.run_dir, records) == {codec}
    ctx = SamplerContext("kafka", Clock(), lambda _: None, ResponseTimes(), (), None, 1.0)
    sampler = KafkaTopicSampler(config.stage("kafka").settings, ctx)  # type: ignore[union-attr, arg-type]

    async def sample() -> float:
        await sampler.start()
        try:
            return (await sampler.sample()).values["freshness"]
        finally:
            await sampler.close()

    assert 0 <= run_sync(sample()) < 60


# -- the validator's own canaries keep the topic's key placement -------------------------------------------------


def test_the_kafka_injector_puts_each_canary_where_the_topics_partitioner_puts_its_key(
    pipeline_stack: PipelineStack, validator: Validator, tmp_path: Path, topic: str
) -> None:
    """A topic a librdkafka producer keys by CRC32: canaries the validator writes itself (source type kafka) go
    where CRC32 puts their symbol, one partition per key, and still cover every partition; so a second run on the
    topic, its records now partly canaries, finds CRC32 again (canaries spread over partitions whatever their
    key would have told it that keys do not decide the partition)."""
    bootstrap = pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]
    keys = [f"CRC{i}".encode() for i in range(30)]
    asyncio.run(produce_placed(bootstrap, topic, [k for k in keys for _ in range(4)], HASHES["crc32"]))
    text = f'[source]\ntype = "kafka"\ntopic = "{topic}"\n[stages.kafka]\nbootstrap = "{bootstrap}"\n'
    text += f'topic = "{topic}"\n[sla]\nthresholds = ["lost == 0", "coverage == 100%"]\n'
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    config = load_config(path, {})
    for run, written in (("first", 60), ("second", 120)):  # the same symbols both times: the same placement
        outcome = validator(config=config, count=60, rate=300)
        outcome.check()
        (found,) = [n for n in outcome.finished.notes if n.startswith("stages.kafka.partitioner auto:")]
        assert found.startswith("stages.kafka.partitioner auto: crc32 ("), (run, found)
        symbols = {s.encode() for s in outcome.book.factory.symbols}
        canaries = asyncio.run(keyed_records(bootstrap, topic, symbols, written, 10.0))
        assert {r.partition for r in canaries} == {0, 1, 2}, run
        misplaced = [(r.key, r.partition) for r in canaries if r.partition != HASHES["crc32"](r.key, 3)]
        assert not misplaced, (run, misplaced[:5])


async def produce_placed(bootstrap: str, topic: str, keys: list[bytes], place: Callable[[bytes, int], int]) -> None:
    """A record per key in ``keys``, each on the partition ``place`` gives its key (of 3)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, b"{}", key=key, partition=place(key, 3))
    finally:
        await producer.stop()


def test_a_codec_this_install_cannot_read_is_exit_2_naming_stages_kafka(pipeline_stack: PipelineStack) -> None:
    """The stack's raw topic holds lz4 batches (the ingestor's default); without cramjam they cannot be read."""
    script = "import sys; sys.modules['cramjam'] = None; from pipeline_check.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", script, "validate", "-c", str(CONFIG), "--scenario", "smoke"],
        env={**pipeline_stack.env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "stages.kafka" in line]
    assert len(errors) == 1, done.stderr
    assert (
        "stages.kafka.topic='market.trades.raw' (str): holds record batches this install cannot decompress" in errors[0]
    )
    assert "lz4" in errors[0] and "install cramjam" in errors[0] and "Traceback" not in done.stderr


# -- string trade ids in Iceberg ---------------------------------------------------------------------------------


def test_the_iceberg_stage_follows_formatted_string_ids_and_places_a_loss_before_the_table(
    local_stack: LocalStack, pipeline_stack: PipelineStack, validator: Validator, tmp_path: Path
) -> None:
    table = "market.trades_text"
    local_stack.restart(
        "consumer", env={"ICEBERG_TABLE": table, "TABLE_ID_FORMAT": "BINANCE-{id}", "UNSAFE_DROP_FRACTION": "0.1"}
    )
    config = variant(
        pipeline_stack, tmp_path,
        ('table = "market.trades"', f'table = "{table}"'),
        ('tag_column = "trade_id"', 'tag_column = "trade_id"\ntag_pattern = "BINANCE-{tag}"'),
    )  # fmt: skip
    outcome = validator(config=config, count=200, rate=100, drain_timeout="10s")
    book, summary = outcome.book, outcome.finished.summary
    dropped = {book.run.tag(s) for s in range(200) if picked(book.run.tag(s), 0.1, DROP_KEY)}
    assert 5 < len(dropped) < 40
    # every canary the consumer dropped reached the topic and the group's offsets, never the table
    assert set(summary.stuck) == {"consumer"} and set(summary.stuck["consumer"]) == {label(t) for t in dropped}
    assert summary.lost == len(dropped) and book.reached("iceberg") == 200 - len(dropped)
    statuses = {r.threshold: r.status for r in outcome.finished.results}
    assert statuses == {**dict.fromkeys(CHECKS, Status.PASSED), "lost == 0": Status.FAILED}
    assert book.compared == 400 - len(dropped) and not book.diffs  # each row's fields, found by its text id
    catalog = load_catalog("local", type="sql", uri=pipeline_stack.exports["PC_ICEBERG_CATALOG_URI"],
                           warehouse=pipeline_stack.exports["PC_ICEBERG_WAREHOUSE"])  # fmt: skip
    written = catalog.load_table(table)
    assert isinstance(written.schema().find_field("trade_id").field_type, StringType)
    # cleanup finds this run's rows by their text and deletes exactly them
    cleanup = stage_cleanup(config)
    found = cleanup.plan(Selection.of_run(str(book.run)))
    assert found.rows_per_run == {book.run: 200 - len(dropped)}
    done = cleanup.delete(found)
    assert (done.rows, done.left) == (200 - len(dropped), 0)


# -- canaries in a foreign Avro schema, through a template ---------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[StandIn]:
    stand_in = StandIn(tmp_path)
    try:
        yield stand_in.start()
    finally:
        stand_in.stop()


def test_canaries_go_into_a_registry_subject_with_a_foreign_schema_through_a_template(
    local_stack: LocalStack, pipeline_stack: PipelineStack, validator: Validator, tmp_path: Path, topic: str,
    registry: StandIn,
) -> None:  # fmt: skip
    with RegistryAdmin(registry.url) as admin:
        schema_id = admin.register(f"{topic}-value", FOREIGN)
    bootstrap = pipeline_stack.exports["PC_KAFKA_BOOTSTRAP"]
    text = f'[source]\ntype = "kafka"\ncompression = "lz4"\n{TEMPLATE}\n'
    text += (
        f'[stages.kafka]\nbootstrap = "{bootstrap}"\ntopic = "{topic}"\nformat = "avro"\n'
        f'registry_url = "{registry.url}"\ntag_field = "exec_ref"\ntag_pattern = "BINANCE-{{tag}}"\n'
        'fields = { px = "px:decimal", qty = "qty:decimal", "instrument.symbol" = "instrument.symbol", '
        'aggressor = "aggressor", kind = "kind", exec_ts = "exec_ts:ms", msg_id = "msg_id" }\n'
        '[sla]\nthresholds = ["lost == 0", "corrupted == 0", "coverage == 100%"]\n'
    )
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    outcome = validator(config=load_config(path, {}), count=60, rate=200, background_rate=100)
    outcome.check()
    assert outcome.book.compared == 60 and not outcome.book.diffs
    codec = AvroCodec(FOREIGN, schema_id)
    written = asyncio.run(everything(bootstrap, topic))
    decoded = [to_comparable(codec.decode(r.value)) for r in written]
    canaries = [d for d in decoded if parse(int(d["exec_ref"].removeprefix("BINANCE-"))) is not None]
    assert len(canaries) == 60 and len(decoded) > 60  # background trades went in the same shape
    assert all(d["kind"] == "TRADE" and d["instrument"]["venue"] == "BINANCE" for d in decoded)
    assert {d["aggressor"] for d in decoded} == {"BID", "ASK"}
    assert codecs_of(local_stack.spec.run_dir, written) == {"lz4"}


async def everything(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``."""
    reader = RecordReader(bootstrap, topic, "test")
    await reader.start()
    try:
        ends, begins = await reader.ends(), await reader.begins()
        found = await reader.read({tp: (begins[tp], end) for tp, end in ends.items()}, timeout=10)
        return [r for records in found.values() for r in records]
    finally:
        await reader.close()
