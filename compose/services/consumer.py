"""Consumer: Kafka raw topic -> validate/normalise -> Iceberg appends, exactly once; bad records -> DLQ.

Exactly once, without Kafka transactions:
  1. every append carries the snapshot property ``kafka.offsets`` = {"topic:partition": next_offset}
     for every partition ever written (merged with the previous snapshot's map);
  2. Kafka offsets are committed only after the Iceberg commit succeeded;
  3. on assignment each partition seeks to the offset in the newest snapshot carrying the map
     (or the committed offset when that is later: a DLQ-only flush commits without a snapshot).
So a kill -9 between the Iceberg commit and the Kafka commit re-reads nothing that is in the table.
DLQ records of a batch are produced (and acknowledged) before its offsets are committed anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from .common import (
    CommonConfig,
    HttpTask,
    Shutdown,
    StateLog,
    env_bool,
    env_int,
    env_port,
    env_str,
    health_app,
    load_config,
    run_main,
    setup_logging,
    utc_ms,
)
from .iceberg import (
    OFFSETS_PROPERTY,
    TRADES_ARROW_SCHEMA,
    dump_offsets,
    ensure_table,
    merge_offsets,
    open_catalog,
    snapshot_offsets,
    tp_key,
)
from .kafka_util import KafkaWatchdog, ensure_topics
from .trades import Batch, BatchBuffer, resume_offset, to_arrow

log = logging.getLogger("consumer")

SHUTDOWN_FLUSH_S = 3.0
KAFKA_COMMIT_TIMEOUT_S = 5.0
SUMMARY_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    common: CommonConfig
    group: str
    health_host: str
    health_port: int
    flush_interval_ms: int
    flush_max_rows: int
    unsafe_skip_idempotence: bool

    @classmethod
    def from_env(cls) -> ConsumerConfig:
        return cls(
            common=CommonConfig.from_env(),
            group=env_str("CONSUMER_GROUP"),
            health_host=env_str("HEALTH_HOST", "127.0.0.1"),
            health_port=env_port("HEALTH_PORT"),
            flush_interval_ms=env_int("FLUSH_INTERVAL_MS", 500, minimum=10, maximum=600_000),
            flush_max_rows=env_int("FLUSH_MAX_ROWS", 20_000, minimum=1, maximum=10_000_000),
            unsafe_skip_idempotence=env_bool("CONSUMER_UNSAFE_SKIP_IDEMPOTENCE", False),
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Consumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner.on_assigned(set(assigned))


class Consumer:
    def __init__(self, cfg: ConsumerConfig, shutdown: Shutdown) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        self.watchdog = KafkaWatchdog(cfg.common.kafka_bootstrap, f"{cfg.group}-health")
        self.states = StateLog(log)
        self.buffer = BatchBuffer()
        # one flush at a time; the rebalance listener takes it too
        self.lock = asyncio.Lock()
        self.table: Table | None = None
        self.catalog_state = "not loaded yet"
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.assignment: set[TopicPartition] = set()
        # offsets reached by flushes but not yet committed to Kafka (commit failed, or unsafe mode)
        self.pending_commit: dict[TopicPartition, int] = {}
        self.committed: dict[str, int] = {}
        self.flush_failing = False
        self.stats: dict[str, Any] = {
            "rows_written": 0, "dlq_records": 0, "flushes": 0, "snapshot_id": None,
            "last_flush": None, "last_error": None,
        }
        self._summary_at = time.monotonic()
        self._summary_rows = 0

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, dict[str, Any]]:
        kafka_ok = self.watchdog.ok
        catalog_ok = self.catalog_state == "ok"
        lag: dict[str, int] = {}
        if self.consumer is not None:
            for tp in sorted(self.assignment):
                high = self.consumer.highwater(tp)
                done = self.committed.get(tp_key(tp.topic, tp.partition))
                if high is not None and done is not None:
                    lag[tp_key(tp.topic, tp.partition)] = max(0, high - done)
        body: dict[str, Any] = {
            "status": "ok" if kafka_ok and catalog_ok else "unhealthy",
            "kafka": self.watchdog.status,
            "catalog": self.catalog_state,
            "table": {"name": self.cfg.common.iceberg_table, "snapshot_id": self.stats["snapshot_id"]},
            "group": self.cfg.group,
            "assignment": [tp_key(tp.topic, tp.partition) for tp in sorted(self.assignment)],
            "committed_offsets": dict(sorted(self.committed.items())),
            "lag": lag,
            "buffered_rows": len(self.buffer),
            "rows_written": self.stats["rows_written"],
            "dlq_records": self.stats["dlq_records"],
            "flushes": self.stats["flushes"],
            "last_flush": self.stats["last_flush"],
            "last_error": self.stats["last_error"],
            "unsafe_skip_idempotence": self.cfg.unsafe_skip_idempotence,
        }
        return kafka_ok and catalog_ok, body

    # ------------------------------------------------------------------ Iceberg

    async def load_table(self) -> bool:
        """Open catalog and table (creating them on first start); retry until it works or shutdown."""
        backoff = 0.2
        while not self.shutdown.requested:
            try:
                self.table = await asyncio.to_thread(self._load_table_sync)
                self.catalog_state = "ok"
                self.states.set("catalog", "ok", f"table {self.cfg.common.iceberg_table}")
                return True
            except Exception as exc:
                self.catalog_state = f"unavailable: {type(exc).__name__}: {exc}"
                self.states.set("catalog", "unavailable", str(exc), logging.WARNING)
            await self.shutdown.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    def _load_table_sync(self) -> Table:
        if self.table is not None:
            return self.table.refresh()
        catalog = open_catalog(self.cfg.common, writer=True)
        return ensure_table(catalog, self.cfg.common)

    def _append_sync(self, batch: Batch) -> tuple[int, dict[str, int]]:
        """Append the batch as one snapshot carrying the merged offsets map; returns (snapshot id, map)."""
        assert self.table is not None
        arrow = to_arrow(batch.rows, TRADES_ARROW_SCHEMA)
        new = {tp_key(t, p): o for (t, p), o in batch.offsets.items()}
        for attempt in range(3):
            previous, _ = snapshot_offsets(self.table)
            merged = merge_offsets(previous, new)
            try:
                self.table.append(arrow, snapshot_properties={OFFSETS_PROPERTY: dump_offsets(merged)})
            except CommitFailedException:
                # someone else committed in between: re-read the offsets map and try again
                if attempt == 2:
                    raise
                self.table = self.table.refresh()
                continue
            snapshot = self.table.current_snapshot()
            assert snapshot is not None
            return snapshot.snapshot_id, merged
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ flushing

    async def flush(self, *, reason: str) -> bool:
        """Write what is buffered: DLQ first, then one Iceberg append, then the Kafka commit."""
        async with self.lock:
            return await self._flush_locked(reason)

    async def _flush_locked(self, reason: str) -> bool:
        if self.buffer.empty:
            await self._commit_pending()
            return True
        batch = self.buffer.take()
        started = time.monotonic()
        dlq_count = len(batch.dlq)
        try:
            await self._produce_dlq(batch)
        except Exception as exc:
            self.buffer.restore(batch)
            return self._flush_failed("DLQ produce", exc)
        # produced: a retry after a failed append must not send them again
        batch.dlq = []
        self.stats["dlq_records"] += dlq_count
        snapshot_id = None
        if batch.rows:
            try:
                snapshot_id, _ = await asyncio.to_thread(self._append_sync, batch)
            except Exception as exc:
                self.buffer.restore(batch)
                self.catalog_state = f"unavailable: {type(exc).__name__}: {exc}"
                return self._flush_failed("Iceberg append", exc)
            self.catalog_state = "ok"
        self.flush_failing = False
        self.states.set("flush", "ok")
        for (topic, partition), offset in batch.offsets.items():
            self.pending_commit[TopicPartition(topic, partition)] = offset
        if not self.cfg.unsafe_skip_idempotence:
            await self._commit_pending()
        self.stats["flushes"] += 1
        self.stats["rows_written"] += len(batch.rows)
        if snapshot_id is not None:
            self.stats["snapshot_id"] = snapshot_id
        took_ms = round((time.monotonic() - started) * 1000, 1)
        self.stats["last_flush"] = {
            "at_ms": utc_ms(), "rows": len(batch.rows), "dlq": dlq_count, "took_ms": took_ms,
            "reason": reason, "snapshot_id": snapshot_id,
        }
        self._summary_rows += len(batch.rows)
        if dlq_count or reason not in {"interval", "max_rows"} or self.stats["flushes"] == 1:
            log.info(
                "flush (%s): %d rows, %d to DLQ, snapshot %s, offsets %s, %.0f ms",
                reason, len(batch.rows), dlq_count, snapshot_id,
                {tp_key(t, p): o for (t, p), o in sorted(batch.offsets.items())}, took_ms,
            )
        return True

    def _flush_failed(self, step: str, exc: BaseException) -> bool:
        self.flush_failing = True
        self.stats["last_error"] = f"{step}: {type(exc).__name__}: {exc}"
        self.states.set("flush", "failing", self.stats["last_error"], logging.ERROR)
        return False

    async def _produce_dlq(self, batch: Batch) -> None:
        if not batch.dlq:
            return
        assert self.producer is not None
        futures = [
            await self.producer.send(self.cfg.common.dlq_topic, value=rec.value, key=rec.key)
            for rec in batch.dlq
        ]
        await asyncio.gather(*futures)
        for rec in batch.dlq[:5]:
            log.info("to DLQ: %s", rec.value[:300].decode("utf-8", errors="replace"))
        if len(batch.dlq) > 5:
            log.info("to DLQ: ... and %d more", len(batch.dlq) - 5)

    async def _commit_pending(self) -> None:
        """Commit offsets reached by successful flushes; a failure is retried at the next flush."""
        if not self.pending_commit or self.consumer is None:
            return
        offsets = {tp: o for tp, o in self.pending_commit.items() if tp in self.assignment}
        # a partition we no longer own: its new owner resumes from the snapshot map
        self.pending_commit = dict(offsets)
        if not offsets:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), KAFKA_COMMIT_TIMEOUT_S)
        except Exception as exc:
            self.states.set("kafka commit", "failing", f"{type(exc).__name__}: {exc}", logging.WARNING)
            return
        self.states.set("kafka commit", "ok")
        for tp, offset in offsets.items():
            self.committed[tp_key(tp.topic, tp.partition)] = offset
            if self.pending_commit.get(tp) == offset:
                del self.pending_commit[tp]

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        log.info("partitions revoked: %s", sorted(tp_key(t.topic, t.partition) for t in revoked))
        async with self.lock:
            # write what we hold for these partitions while they are still ours
            await self._flush_locked("rebalance")
            dropped = self.buffer.drop_partitions({(t.topic, t.partition) for t in revoked})
            if dropped:
                log.warning("dropped %d buffered rows of revoked partitions (flush failed)", dropped)
            self.assignment -= revoked
            for tp in revoked:
                self.pending_commit.pop(tp, None)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assignment = set(assigned)
        if not assigned:
            return
        assert self.consumer is not None
        async with self.lock:
            if not await self.load_table():
                return
            assert self.table is not None
            snap_offsets, snap_id = snapshot_offsets(self.table)
            positions: dict[str, str] = {}
            for tp in sorted(assigned):
                committed = await self._committed(tp)
                if committed is not None:
                    self.committed[tp_key(tp.topic, tp.partition)] = committed
                snap = None if self.cfg.unsafe_skip_idempotence else snap_offsets.get(
                    tp_key(tp.topic, tp.partition)
                )
                target = resume_offset(snap, committed, unsafe=self.cfg.unsafe_skip_idempotence)
                if target is None:
                    await self.consumer.seek_to_beginning(tp)
                    positions[tp_key(tp.topic, tp.partition)] = "earliest"
                else:
                    self.consumer.seek(tp, target)
                    positions[tp_key(tp.topic, tp.partition)] = (
                        f"{target} (snapshot {snap}, committed {committed})"
                    )
            log.info("partitions assigned (offsets of snapshot %s): %s", snap_id, positions)

    async def _committed(self, tp: TopicPartition) -> int | None:
        assert self.consumer is not None
        backoff = 0.2
        while True:
            try:
                result: int | None = await asyncio.wait_for(self.consumer.committed(tp), 5.0)
                return result
            except Exception as exc:
                if self.shutdown.requested:
                    return None
                self.states.set("committed", "failing", f"{type(exc).__name__}: {exc}", logging.WARNING)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    # ------------------------------------------------------------------ main loop

    async def _start_kafka(self) -> bool:
        common = self.cfg.common
        if not await ensure_topics(common, self.shutdown, f"{self.cfg.group}-admin"):
            return False
        backoff = 0.2
        while not self.shutdown.requested:
            producer = AIOKafkaProducer(
                bootstrap_servers=common.kafka_bootstrap,
                client_id=f"{self.cfg.group}-dlq",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=common.kafka_bootstrap,
                group_id=self.cfg.group,
                client_id=f"{self.cfg.group}-consumer",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # the broker's minimum: a restart after kill -9 waits this long for the old member
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                fetch_max_wait_ms=100,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            try:
                await producer.start()
                consumer.subscribe([common.raw_topic], listener=_Rebalance(self))
                await consumer.start()
                self.producer, self.consumer = producer, consumer
                return True
            except Exception as exc:
                self.states.set("kafka clients", "start failed", str(exc), logging.WARNING)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await producer.stop()
            await self.shutdown.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    async def consume(self) -> None:
        assert self.consumer is not None
        interval = self.cfg.flush_interval_ms / 1000
        next_flush = time.monotonic() + interval
        while not self.shutdown.requested:
            # while flushes fail, stop fetching once the buffer is large: memory stays bounded
            if self.flush_failing and len(self.buffer) >= 5 * self.cfg.flush_max_rows:
                await self.shutdown.wait(interval)
            else:
                wait_ms = max(1, min(100, int((next_flush - time.monotonic()) * 1000)))
                try:
                    data = await self.consumer.getmany(
                        timeout_ms=wait_ms, max_records=self.cfg.flush_max_rows
                    )
                except Exception as exc:
                    self.states.set("fetch", "failing", f"{type(exc).__name__}: {exc}", logging.WARNING)
                    await self.shutdown.wait(0.5)
                    continue
                self.states.set("fetch", "ok")
                for tp, records in data.items():
                    for rec in records:
                        self.buffer.add(
                            tp.topic, tp.partition, rec.offset, rec.timestamp, rec.key, rec.value
                        )
            now = time.monotonic()
            if len(self.buffer) >= self.cfg.flush_max_rows:
                await self.flush(reason="max_rows")
                next_flush = time.monotonic() + interval
            elif now >= next_flush:
                await self.flush(reason="interval")
                next_flush = max(next_flush + interval, time.monotonic())
            if now - self._summary_at >= SUMMARY_EVERY_S:
                log.info(
                    "last %.0fs: %d rows written (total %d, DLQ %d), snapshot %s, committed %s",
                    now - self._summary_at, self._summary_rows, self.stats["rows_written"],
                    self.stats["dlq_records"], self.stats["snapshot_id"], self.committed,
                )
                self._summary_at, self._summary_rows = now, 0

    async def stop(self) -> None:
        """Graceful: final flush (+ the unsafe mode's only commit), leave the group, close clients."""
        if self.consumer is not None:
            try:
                async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                    ok = await self.flush(reason="shutdown")
                    if self.cfg.unsafe_skip_idempotence:
                        async with self.lock:
                            await self._commit_pending()
                    if not ok:
                        log.error("final flush failed: %d rows not written (Kafka re-delivers them)",
                                  len(self.buffer))
            except TimeoutError:
                log.error("final flush did not finish within %.0fs", SHUTDOWN_FLUSH_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 1.5)
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 1.0)


async def main() -> int:
    setup_logging("consumer")
    cfg = load_config(ConsumerConfig.from_env)
    shutdown = Shutdown()
    shutdown.install()
    if cfg.unsafe_skip_idempotence:
        log.warning(
            "CONSUMER_UNSAFE_SKIP_IDEMPOTENCE=1: snapshot offsets are ignored and Kafka offsets are "
            "committed only at shutdown; a crash WILL write rows twice (a test knob, never for real use)"
        )
    service = Consumer(cfg, shutdown)
    http = HttpTask(health_app(service.health), cfg.health_host, cfg.health_port)
    await http.start()
    service.watchdog.start()
    log.info(
        "consumer: group %s, %s -> %s (flush every %d ms or %d rows), health on %s:%d",
        cfg.group, cfg.common.raw_topic, cfg.common.iceberg_table, cfg.flush_interval_ms,
        cfg.flush_max_rows, cfg.health_host, cfg.health_port,
    )
    try:
        if await service.load_table() and await service._start_kafka():
            await service.consume()
    finally:
        await service.stop()
        await service.watchdog.stop()
        await http.stop()
    log.info("consumer stopped")
    return 0


if __name__ == "__main__":
    run_main(main)
