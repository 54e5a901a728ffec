"""The ``kafka`` injector: produces canaries straight to the raw topic (``stages.kafka``)."""

from __future__ import annotations

import asyncio
from collections import deque

from aiokafka import AIOKafkaProducer

from pipeline_check.clock import Clock
from pipeline_check.config import KafkaSource, KafkaStage, PipelineConfig
from pipeline_check.errors import EndpointError
from pipeline_check.events import NoteBuffer
from pipeline_check.injectors.base import INJECTORS
from pipeline_check.kafkautil import missing_topic, reach
from pipeline_check.messages import Trade

IN_FLIGHT = 20_000  # unacknowledged sends before ``send`` waits: bounded memory, full batches


@INJECTORS.register("kafka")
class KafkaInjector(NoteBuffer):
    """An idempotent, acks=all producer keyed by symbol, like the reference ingestor."""

    def __init__(self, config: PipelineConfig, clock: Clock) -> None:
        super().__init__()
        assert isinstance(config.source, KafkaSource) and config.stages.kafka is not None
        self.stage: KafkaStage = config.stages.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.stage.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(config.source.linger * 1000),
            max_batch_size=256 * 1024,
        )
        self._pending: deque[asyncio.Future[object]] = deque()

    async def start(self) -> None:
        try:
            await reach(self._producer.start(), self.stage.bootstrap)
            if not await reach(self._producer.partitions_for(self.stage.topic), self.stage.bootstrap):
                raise missing_topic(self.stage.topic)
        except EndpointError:
            await self._producer.stop()
            raise

    async def send(self, trade: Trade) -> None:
        future = await self._producer.send(self.stage.topic, trade.to_json().encode(), key=trade.symbol.encode())
        self._pending.append(future)
        while len(self._pending) > IN_FLIGHT or (self._pending and self._pending[0].done()):
            await self._pending.popleft()  # raises the broker's error, if any

    async def flush(self) -> None:
        await self._producer.flush()
        while self._pending:
            await self._pending.popleft()

    async def close(self) -> None:
        await self._producer.stop()
