"""The ``kafka`` injector: produces canaries straight to the raw topic (``stages.kafka``).

Records go into per-partition batches the injector builds itself (aiokafka's batch API), so a record
costs an append to a batch buffer instead of a future and an accumulator lookup of its own; that keeps
the injector near Kafka's own producer in records per second (BENCHMARKS.md, injection capacity).
A batch ships when it is full or ``source.linger`` after its first record, in order, through one
shipping task, so records of one partition keep their send order.

Records are JSON, or with ``format = "avro"`` Avro in the Confluent wire format (``codecs.settings``: the schema
registered under ``<topic>-value`` or a configured subject, or a local ``.avsc`` with a given id); every format
setting left out is taken from ``stages.kafka``. They are Binance trades, or with ``[source.record]`` records of the
pipeline's own shape (``template``), bound to the writer schema at start; background trades take the same shape.
Batches are compressed with ``compression`` (none, gzip, snappy, lz4, zstd).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from pydantic import AfterValidator, Field

from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.kafka.codecs.avro import AvroCodec, EncodeError, to_comparable, trade_record
from pipeline_check.backends.kafka.codecs.record_format import FormatSettings, close_codec, writer_codec
from pipeline_check.backends.kafka.compression import Compression, producer_codec
from pipeline_check.backends.kafka.connect import missing_topic, reach
from pipeline_check.backends.kafka.template import Binder, Render, check_template, flat, template_fields
from pipeline_check.canary.coverage import Place, Placement, partition_of
from pipeline_check.canary.trades import TRADE_FIELDS, Trade
from pipeline_check.core.durations import NonNegativeDuration
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.core.plugins import PluginSettings

BATCH_BYTES = 256 * 1024
MAX_QUEUED = 8  # full batches waiting for the shipping task before ``send`` waits: bounded memory
IN_FLIGHT = 64  # shipped batches not yet acknowledged before ``send`` waits
# checked against the writer schema at start: one decimal, so any schema scale above 0 holds them
_SAMPLE = Trade("CANARYUSDT", 1 << 62, "65000.5", "1.5", True, 1_700_000_000_000, seq=0)
_BACKGROUND = Trade("BTCUSDT", 1_000_000_001, "65000.5", "1.5", False, 1_700_000_000_000)


class KafkaSettings(FormatSettings):
    inherit: ClassVar = {
        "stages.kafka": (
            "bootstrap", "topic", "format", "registry_url", "registry_headers", "subject", "schema", "schema_id",
        )
    }  # fmt: skip

    bootstrap: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    # how long a batch waits for more canaries before it ships; 0 ships at once, and batches still fill
    # while the previous one is in flight, so a longer linger only adds to the Kafka latency measured
    linger: NonNegativeDuration = 0.0
    compression: Compression = "none"  # the codec of every batch written
    # [source.record]: the pipeline's own record shape, canary fields mapped into it (template.py)
    record: Annotated[dict[str, Any], AfterValidator(check_template)] | None = None


class KafkaInjector:
    """An idempotent, acks=all producer keyed by symbol, like a typical ingestor: every record goes where the
    stage's partitioner puts its key (``steer``; murmur2 until told), the canaries' symbols chosen to cover
    every partition; round-robin over the partitions only when the pipeline's producer ignores keys."""

    Settings: ClassVar[type[PluginSettings]] = KafkaSettings
    feeds_stage: ClassVar[str | None] = "kafka"

    @classmethod
    def sent_fields(cls, settings: KafkaSettings) -> tuple[str, ...]:
        return TRADE_FIELDS if settings.record is None else template_fields(settings.record)

    def __init__(self, settings: KafkaSettings, ctx: InjectorContext) -> None:
        self.stage = settings
        self.linger = settings.linger
        self._producer: AIOKafkaProducer | None = None  # made in start: an unstarted one warns when collected
        self._place: Place = partition_of  # the stage's key partitioner (steer)
        self._round_robin = False  # keys do not decide the partition on this topic: canaries go round-robin
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        self._open: dict[int, BatchBuilder] = {}  # the batch being filled, per partition
        self._queued: deque[tuple[int, BatchBuilder]] = deque()  # closed, in shipping order
        self._acks: deque[asyncio.Future[object]] = deque()  # one per shipped batch
        self._wake = asyncio.Event()  # something was queued
        self._moved = asyncio.Event()  # the shipping task took a batch (or failed)
        self._due: set[int] = set()  # partitions whose open batch lingered while the shipping task was busy
        self._busy = False
        self._shipper: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._codec: AvroCodec | None = None  # format = "avro"
        self._render: Render | None = None  # [source.record], bound to the writer schema at start

    async def start(self) -> None:
        compression = producer_codec(self.stage.compression, "source.compression")
        await asyncio.to_thread(self.prepare)
        # batches are closed before they are handed over, so the producer's own linger never applies
        self._producer = producer = AIOKafkaProducer(
            bootstrap_servers=self.stage.bootstrap,
            acks="all",
            enable_idempotence=True,
            max_batch_size=BATCH_BYTES,
            compression_type=compression,
        )
        try:
            await reach(producer.start(), self.stage.bootstrap, "source.bootstrap")
            partitions = await reach(
                producer.partitions_for(self.stage.topic), self.stage.bootstrap, "source.bootstrap"
            )
            if not partitions:
                raise missing_topic(self.stage.topic, "source.topic")
        except EndpointError:
            await producer.stop()
            raise
        self._partitions = sorted(partitions)
        self._shipper = asyncio.create_task(self._ship(), name="kafka-injector-ship")

    def steer(self, placement: Placement) -> None:
        """Place records as the stage's producer does (``placement``: the first partitioner that fits the topic),
        or, where its producer ignores keys, spread canaries round-robin (coverage)."""
        if placement.places:
            self._place = placement.places[0][1]
        else:
            self._round_robin = True

    async def send(self, trade: Trade) -> None:
        key = trade.symbol.encode()
        if trade.seq is not None and self._round_robin:
            partition = self._partitions[trade.seq % len(self._partitions)]
        else:
            partition = self._partition_of.get(key, -1)
            if partition < 0:
                partition = self._partition_of[key] = self._partitions[self._place(trade.symbol, len(self._partitions))]
        value = self._encode(trade)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._new_batch(partition)
        if batch.append(timestamp=None, key=key, value=value) is None:  # full: ship it, start the next
            self._queue(partition)
            batch = self._new_batch(partition)
            batch.append(timestamp=None, key=key, value=value)
        if self._failure is not None:
            raise self._failure
        acks = self._acks
        while acks and acks[0].done():
            acks.popleft().result()  # raises the broker's error, if any
        if len(acks) >= IN_FLIGHT:
            await acks.popleft()
        while len(self._queued) >= MAX_QUEUED:
            await self._wait_moved()

    async def flush(self) -> None:
        for partition in list(self._open):
            self._queue(partition)
        while self._queued:
            await self._wait_moved()
        while self._acks:
            await self._acks.popleft()

    async def close(self) -> None:
        if self._shipper is not None:
            self._shipper.cancel()
            await asyncio.gather(self._shipper, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
        close_codec(self._codec)

    def prepare(self) -> None:
        """The writer codec and the template bound to its schema, checked on a canary and a background trade: a
        schema the records do not fit stops the run before it starts. Blocking (registry calls)."""
        if self.stage.format == "avro":
            self._codec = writer_codec(self.stage, self.stage.topic, "source")
        if self.stage.record is not None:
            codec = self._codec
            described = f"schema id {codec.schema_id} for topic {self.stage.topic}" if codec else "JSON records"
            self._render = Binder(codec.schema if codec else None, described).bind(self.stage.record)
        self._encode(_SAMPLE)
        self._encode(_BACKGROUND)

    def sent_record(self, trade: Trade) -> Mapping[str, object]:
        """What the record of ``trade`` carried, as the fidelity diff compares it (the template's fields, nested
        ones also by dotted path; without a template, the trade)."""
        if self._render is None:
            return trade.to_dict()
        return flat(to_comparable(self._render(trade)))  # type: ignore[no-any-return]

    def _encode(self, trade: Trade) -> bytes:
        render = self._render
        if self._codec is None:
            if render is None:
                return trade.to_json().encode()
            return json.dumps(render(trade), separators=(",", ":")).encode()
        try:
            return self._codec.encode(trade_record(trade.to_dict()) if render is None else render(trade))
        except EncodeError as exc:
            setting, fix = (
                ("source.schema", f"use a schema whose records have the trade fields {', '.join(TRADE_FIELDS)}")
                if render is None
                else ("source.record", "map each field to a value its type holds")
            )
            raise ConfigError(
                setting, self._codec.schema.get("name", "<schema>"), f"canaries do not fit it: {exc}", fix
            ) from None

    # -- batching ------------------------------------------------------------------------------------

    def _new_batch(self, partition: int) -> BatchBuilder:
        if self._producer is None:
            raise RuntimeError("KafkaInjector used before start")
        batch: BatchBuilder = self._producer.create_batch()
        self._open[partition] = batch
        asyncio.get_running_loop().call_later(self.linger, self._lingered, partition, batch)
        return batch

    def _lingered(self, partition: int, batch: BatchBuilder) -> None:
        """Linger is over: ship the batch now, or, while the shipping task is busy, as soon as it is
        free (the batch keeps filling meanwhile, like the producer's own batches during a request)."""
        if self._open.get(partition) is batch:
            if self._busy or self._queued:
                self._due.add(partition)
            else:
                self._queue(partition)

    def _queue(self, partition: int) -> None:
        batch = self._open.pop(partition)
        batch.close()
        self._queued.append((partition, batch))
        self._wake.set()

    async def _wait_moved(self) -> None:
        if self._failure is not None:
            raise self._failure
        self._moved.clear()
        await self._moved.wait()
        if self._failure is not None:
            raise self._failure

    async def _ship(self) -> None:
        """Hand queued batches to the producer one by one (it waits while a partition's previous batch
        is still queued there), keeping their order."""
        try:
            while True:
                while not self._queued:
                    self._wake.clear()
                    await self._wake.wait()
                partition, batch = self._queued[0]
                self._busy = True
                if self._producer is None:
                    raise RuntimeError("KafkaInjector shipping before start")
                ack = await self._producer.send_batch(batch, self.stage.topic, partition=partition)
                self._busy = False
                self._queued.popleft()
                self._acks.append(ack)
                self._moved.set()
                if not self._queued and self._due:
                    for due in self._due:
                        if due in self._open:
                            self._queue(due)
                    self._due.clear()
        except Exception as exc:
            self._failure = exc
            self._moved.set()
            raise
