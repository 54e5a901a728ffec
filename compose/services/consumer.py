"""Consumer: Kafka raw topic -> validate/normalise -> Iceberg appends, exactly once; bad records -> DLQ.

Exactly once, without Kafka transactions:
  1. every append carries the snapshot property ``kafka.offsets`` = {"topic:partition": next_offset}
     for every partition ever written (merged with the previous snapshot's map);
  2. Kafka offsets are committed only after the Iceberg commit succeeded;
  3. on assignment each partition seeks to the offset in the newest snapshot carrying the map
     (or the committed offset when that is later: a DLQ-only flush commits without a snapshot).
  4. records aiokafka fetches (from the committed offset) while the async rebalance listener is
     still reading the snapshot are dropped by a PositionGuard and fetched again after the seek.
So a kill -9 between the Iceberg commit and the Kafka commit re-reads nothing that is in the table.
DLQ records of a batch are produced (and acknowledged) before its offsets are committed anywhere.

Record format (record_format.py): RECORD_FORMAT=json (default) | avro (Confluent wire format, writer schemas from
SCHEMA_REGISTRY_URL); an Avro record is checked by the same rules as a JSON one.

Write modes (legitimate, see writes.py): WRITE_MODE=append (default) | upsert | overwrite;
REDELIVER_LAST_FLUSH=1 (upsert/overwrite only) makes each flush carry the previous flush's rows again;
OVERWRITE_BUCKET_MS (default 10000) is the trade_time bucket an overwrite rewrites.

Deliberate faults (faults.py), all off by default and logged at WARNING on start; offsets are
committed as usual unless a switch says otherwise:
  UNSAFE_DROP_FRACTION=0.05       trades whose keyed hash of the trade id falls below 0.05 are never
                                  written (the same ids every run): silent loss
  UNSAFE_DUPLICATE_FRACTION=0.05  such a share of trades (an independent hash) is written twice in
                                  the same append
  UNSAFE_DROP_PARTITION=1         that raw-topic partition's trades are never written: silent loss
  UNSAFE_STALL_PARTITION=1        that partition is paused: never fetched, its offset never committed
  UNSAFE_ROUND_PRICE_DECIMALS=2   prices rounded half-even to 2 decimals
  UNSAFE_FLOAT_PRICES=1           prices as a float64 column would hold them (>15 significant digits change)
  UNSAFE_SHIFT_TIME_MS=3600000    event_time and trade_time moved by that many ms (may be negative)
  UNSAFE_REAPPEND_AFTER_MS=1500   the last batch is appended again, once, after the stream has been
                                  quiet that long (a retried commit landing late)
  UNSAFE_NEVER_COMMIT=1           the table is written as usual; Kafka offsets are never committed
  UNSAFE_KEEP_EVERY_N=5           one trade in every 5 consecutive trade ids (which one by a keyed hash)
                                  is written; the others are acknowledged and lost (80 % here)
  UNSAFE_REWRITE_FRACTION=0.2     such a share of committed trades is rewritten UNSAFE_REWRITE_AFTER_MS
                                  (default 2000) after its commit, with its price one unit off, by an
                                  Iceberg OVERWRITE that keeps symbol and trade id (table_faults.py)
  UNSAFE_DELETE_FRACTION=0.2      such a share of committed trades is deleted UNSAFE_DELETE_AFTER_MS
                                  (default 2000) after its commit and appended again, unchanged,
                                  UNSAFE_RESTORE_AFTER_MS (default 3000) after the delete
Rewrites, deletes and restores not yet due when the consumer stops are never made.
Table shape (table_shape.py, off by default): TABLE_ID_FORMAT=BINANCE-{id} writes trade_id as that text.
A batch held for tens of seconds needs no switch: FLUSH_INTERVAL_MS=20000 holds rows and offsets and
commits both every 20 s (raise FLUSH_MAX_ROWS above 20 s worth of trades, or a full buffer flushes early).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from .common import (
    CommonConfig,
    HttpTask,
    Shutdown,
    StateLog,
    describe,
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
from .faults import ConsumerFaults, LateChange, LateChanges
from .iceberg import (
    OFFSETS_PROPERTY,
    TRADES_ARROW_SCHEMA,
    dump_offsets,
    ensure_table,
    expire_snapshots,
    merge_offsets,
    open_catalog,
    snapshot_offsets,
    tp_key,
)
from .kafka_util import KafkaWatchdog, close_quietly, ensure_topics
from .record_format import RecordFormat, trade_parser
from .table_faults import apply_late
from .table_shape import TableShape
from .trades import Batch, BatchBuffer, PositionGuard, Row, StallWatch, clamp_offset, resume_offset, to_arrow
from .writes import WriteConfig, latest_per_key, write

log = logging.getLogger("consumer")

T = TypeVar("T")

# shutdown budget (SIGTERM -> exit within ~5 s): final flush, then leaving the group, closing clients
SHUTDOWN_FLUSH_S = 2.5
# a DLQ produce or offset commit that takes longer is retried at the next flush
KAFKA_WAIT_S = 5.0
SUMMARY_EVERY_S = 10.0
# Snapshot expiry (metadata only): snapshots older than SNAPSHOT_RETENTION_S go, checked every
# EXPIRE_EVERY_S. Each commit costs O(snapshots kept) (the metadata JSON lists them all; ~0.2 ms of CPU
# per snapshot measured), so history is kept as short as its readers allow: a reader that follows the
# table snapshot by snapshot (pipeline-check's Iceberg probe polls every 0.1-1 s) must find every
# snapshot it has not read yet; one minute is 60 times a 1 s poll interval and at two commits a
# second keeps ~120-140 snapshots (~30 ms per commit). A reader away for longer still reads every row
# (the current snapshot holds them all) but no longer snapshot by snapshot. The newest
# SNAPSHOT_KEEP_LAST stay whatever their age: when commits are rare they cost nothing, and a reader
# looking back over the last batches of a quiet table still finds them.
EXPIRE_EVERY_S = 10.0
SNAPSHOT_RETENTION_S = 60.0
SNAPSHOT_KEEP_LAST = 100
# records waiting past the offsets taken in and none taken for this long: the Kafka client is stalled
# (StallWatch, checked every STALL_CHECK_S)
STALL_S = 20.0
STALL_CHECK_S = 5.0


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    common: CommonConfig
    group: str
    health_host: str
    health_port: int
    flush_interval_ms: int
    flush_max_rows: int
    unsafe_skip_idempotence: bool
    write: WriteConfig
    faults: ConsumerFaults
    record_format: RecordFormat
    shape: TableShape

    @classmethod
    def from_env(cls) -> ConsumerConfig:
        common = CommonConfig.from_env()
        return cls(
            common=common,
            group=env_str("CONSUMER_GROUP"),
            health_host=env_str("HEALTH_HOST", "127.0.0.1"),
            health_port=env_port("HEALTH_PORT"),
            flush_interval_ms=env_int("FLUSH_INTERVAL_MS", 500, minimum=10, maximum=600_000),
            flush_max_rows=env_int("FLUSH_MAX_ROWS", 20_000, minimum=1, maximum=10_000_000),
            unsafe_skip_idempotence=env_bool("CONSUMER_UNSAFE_SKIP_IDEMPOTENCE", False),
            write=WriteConfig.from_env(),
            faults=ConsumerFaults.from_env(common.raw_topic_partitions),
            record_format=RecordFormat.from_env(common.raw_topic),
            shape=TableShape.from_env(),
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Consumer) -> None:
        self._owner = owner

    # aiokafka logs listener exceptions on its own (silenced) logger: report them here
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self._owner.on_revoked(set(revoked))
        except Exception:
            log.exception("partition revocation failed")
            raise

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._owner.on_assigned(set(assigned))
        except Exception as exc:
            # fetching from the committed offsets could write rows twice: fetch nothing and exit
            if self._owner.shutdown.requested:
                self._owner.pause(assigned)
                return
            log.exception("partition assignment failed; stopping")
            self._owner.fail(f"partition assignment failed: {describe(exc)}", assigned)


class Consumer:
    def __init__(self, cfg: ConsumerConfig, shutdown: Shutdown) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        self.watchdog = KafkaWatchdog(cfg.common.kafka_bootstrap, f"{cfg.group}-health")
        self.states = StateLog(log)
        self.buffer = BatchBuffer(trade_parser(cfg.record_format))
        # one flush at a time; the rebalance listener takes it too
        self.lock = asyncio.Lock()
        self.table: Table | None = None
        self.catalog_state = "not loaded yet"
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.assignment: set[TopicPartition] = set()
        self.guard = PositionGuard()
        self.stall_watch = StallWatch(STALL_S)
        self.dropped_unpositioned = 0
        # offsets reached by flushes but not yet committed to Kafka (commit failed, or unsafe mode)
        self.pending_commit: dict[TopicPartition, int] = {}
        self.committed: dict[str, int] = {}
        self.flush_failing = False
        self.fatal: str | None = None
        self.final_flush = False
        self.stats: dict[str, Any] = {
            "rows_written": 0,
            "dlq_records": 0,
            "flushes": 0,
            "snapshot_id": None,
            "last_flush": None,
            "last_error": None,
        }
        self._summary_at = time.monotonic()
        self._expired_at = time.monotonic()
        self._summary_rows = 0
        # REDELIVER_LAST_FLUSH: the previous flush's rows, written again with the next one
        self.redelivery: pa.Table | None = None
        # UNSAFE_REAPPEND_AFTER_MS: the last batch written and when to append it again
        self.reappend: tuple[pa.Table, float] | None = None
        # UNSAFE_REWRITE_* / UNSAFE_DELETE_*: changes to committed rows, due later
        self.late = LateChanges(cfg.faults)

    def pause(self, partitions: list[TopicPartition]) -> None:
        if self.consumer is not None and partitions:
            with contextlib.suppress(Exception):
                self.consumer.pause(*partitions)

    def fail(self, reason: str, partitions: list[TopicPartition]) -> None:
        """Stop the service with exit code 1 (the supervisor restarts it); fetch nothing meanwhile."""
        self.fatal = reason
        self.pause(partitions)
        self.shutdown.event.set()

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
            "dropped_before_seek": self.dropped_unpositioned,
            "rows_written": self.stats["rows_written"],
            "dlq_records": self.stats["dlq_records"],
            "flushes": self.stats["flushes"],
            "last_flush": self.stats["last_flush"],
            "last_error": self.stats["last_error"],
            "unsafe_skip_idempotence": self.cfg.unsafe_skip_idempotence,
            "write_mode": self.cfg.write.mode.value,
            "faults": [line.split(":", 1)[0] for line in self.cfg.faults.warnings()],
            "late_changes_pending": len(self.late),
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
                self.catalog_state = f"unavailable: {describe(exc)}"
                self.states.set("catalog", "unavailable", str(exc), logging.WARNING)
            await self.shutdown.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    def _load_table_sync(self) -> Table:
        if self.table is not None:
            return self.table.refresh()
        catalog = open_catalog(self.cfg.common, writer=True)
        return ensure_table(catalog, self.cfg.common, self.cfg.shape.schema)

    def _write_sync(self, rows: list[Row], offsets: dict[tuple[str, int], int]) -> tuple[int, pa.Table]:
        """Write the rows (with the previous flush's when re-delivering) as one commit carrying the
        merged offsets map; returns (snapshot id, the rows as Arrow)."""
        assert self.table is not None
        arrow = self.cfg.shape.rows(to_arrow(rows, TRADES_ARROW_SCHEMA))
        payload = arrow if self.redelivery is None else latest_per_key(arrow, self.redelivery)
        new = {tp_key(t, p): o for (t, p), o in offsets.items()}
        for attempt in range(3):
            previous, _ = snapshot_offsets(self.table)
            merged = merge_offsets(previous, new)
            try:
                write(self.table, payload, {OFFSETS_PROPERTY: dump_offsets(merged)}, self.cfg.write)
            except CommitFailedException:
                # someone else committed in between: re-read the offsets map and try again
                if attempt == 2:
                    raise
                self.table = self.table.refresh()
                continue
            snapshot = self.table.current_snapshot()
            assert snapshot is not None
            return snapshot.snapshot_id, arrow
        raise AssertionError("unreachable")

    def _reappend_sync(self, rows: pa.Table) -> int:
        """UNSAFE_REAPPEND_AFTER_MS: append rows already written once more, offsets map unchanged."""
        assert self.table is not None
        offsets, _ = snapshot_offsets(self.table)
        self.table.append(rows, snapshot_properties={OFFSETS_PROPERTY: dump_offsets(offsets)})
        snapshot = self.table.current_snapshot()
        assert snapshot is not None
        return snapshot.snapshot_id

    # ------------------------------------------------------------------ flushing

    async def flush(self, *, reason: str) -> bool:
        """Write what is buffered: DLQ first, then one Iceberg append, then the Kafka commit."""
        async with self.lock:
            return await self._flush_locked(reason)

    async def _flush_locked(self, reason: str) -> bool:
        if self.buffer.empty:
            if not self.cfg.unsafe_skip_idempotence:
                await self._commit_pending()  # retry a commit that failed earlier
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
        rows = self.cfg.faults.apply(batch.rows)
        if rows:
            try:
                snapshot_id, written = await asyncio.to_thread(self._write_sync, rows, batch.offsets)
            except Exception as exc:
                self.buffer.restore(batch)
                self.catalog_state = f"unavailable: {describe(exc)}"
                return self._flush_failed(f"Iceberg {self.cfg.write.mode.value}", exc)
            self.catalog_state = "ok"
            if self.cfg.write.redeliver_last:
                self.redelivery = written
            if self.cfg.faults.reappend_after_ms is not None:
                self.reappend = (written, time.monotonic() + self.cfg.faults.reappend_after_ms / 1000)
            self.late.committed(rows, time.monotonic())
        self.flush_failing = False
        self.states.set("flush", "ok")
        for (topic, partition), offset in batch.offsets.items():
            self.pending_commit[TopicPartition(topic, partition)] = offset
        if not self.cfg.unsafe_skip_idempotence:
            await self._commit_pending()
        self.stats["flushes"] += 1
        self.stats["rows_written"] += len(rows)
        if snapshot_id is not None:
            self.stats["snapshot_id"] = snapshot_id
        took_ms = round((time.monotonic() - started) * 1000, 1)
        self.stats["last_flush"] = {
            "at_ms": utc_ms(),
            "rows": len(rows),
            "dlq": dlq_count,
            "took_ms": took_ms,
            "reason": reason,
            "snapshot_id": snapshot_id,
        }
        self._summary_rows += len(rows)
        if took_ms > STALL_CHECK_S * 1000:
            # nothing is fetched meanwhile: a slow flush looks like a stalled consumer from outside
            log.warning("flush (%s) of %d rows took %.1fs, nothing fetched meanwhile", reason, len(rows), took_ms / 1e3)
        elif dlq_count or reason not in {"interval", "max_rows"} or self.stats["flushes"] == 1:
            log.info(
                "flush (%s): %d rows, %d to DLQ, snapshot %s, offsets %s, %.0f ms",
                reason,
                len(rows),
                dlq_count,
                snapshot_id,
                {tp_key(t, p): o for (t, p), o in sorted(batch.offsets.items())},
                took_ms,
            )
        if snapshot_id is not None and reason != "shutdown":
            await self._maybe_expire()  # after the Kafka commit: it must not delay it
        return True

    async def _maybe_expire(self) -> None:
        if time.monotonic() - self._expired_at < EXPIRE_EVERY_S or self.table is None:
            return
        self._expired_at = time.monotonic()
        table = self.table
        try:
            count = await asyncio.to_thread(
                expire_snapshots,
                table,
                older_than_ms=utc_ms() - int(SNAPSHOT_RETENTION_S * 1000),
                keep_last=SNAPSHOT_KEEP_LAST,
            )
        except Exception as exc:  # maintenance only: the next round retries
            log.warning("snapshot expiry failed: %s", describe(exc))
            return
        if count:
            log.info("expired %d old snapshots (metadata only) in %.2fs", count, time.monotonic() - self._expired_at)

    async def _reappend(self) -> None:
        """UNSAFE_REAPPEND_AFTER_MS: the last batch once more, as a late copy of a retried commit."""
        assert self.reappend is not None
        rows, self.reappend = self.reappend[0], None
        async with self.lock:
            try:
                snapshot_id = await asyncio.to_thread(self._reappend_sync, rows)
            except Exception as exc:  # the fault gives up; the pipeline itself is unaffected
                log.warning("re-append of the last batch failed: %s", describe(exc))
                return
        log.warning("UNSAFE_REAPPEND_AFTER_MS: appended the last %d rows again (snapshot %s)", len(rows), snapshot_id)

    async def _late_changes(self, changes: list[LateChange]) -> None:
        """UNSAFE_REWRITE_* / UNSAFE_DELETE_*: commit the changes now due to rows committed earlier."""
        for change in changes:
            async with self.lock:
                assert self.table is not None
                try:
                    snapshot_id = await asyncio.to_thread(apply_late, self.table, change)
                except Exception as exc:  # the fault gives up on these rows; the pipeline itself is unaffected
                    log.warning("late %s of %d rows failed: %s", change.kind.value, len(change.rows), describe(exc))
                    self.late.done(change, time.monotonic(), applied=False)
                    continue
            self.late.done(change, time.monotonic())
            log.warning("late %s of %d committed rows (snapshot %s)", change.kind.value, len(change.rows), snapshot_id)

    def _flush_failed(self, step: str, exc: BaseException) -> bool:
        self.flush_failing = True
        self.stats["last_error"] = f"{step}: {describe(exc)}"
        self.states.set("flush", "failing", self.stats["last_error"], logging.ERROR)
        return False

    async def _kafka_wait(self, what: str, call: Awaitable[T]) -> T:
        """Await a Kafka request for at most KAFKA_WAIT_S, and no longer than until a shutdown request
        (except in the final flush, which has its own budget): a flush must not hold SIGTERM up."""
        task = asyncio.ensure_future(call)
        waiters: set[asyncio.Future[Any]] = {task}
        stop: asyncio.Future[Any] | None = None
        if not self.final_flush:
            stop = asyncio.ensure_future(self.shutdown.event.wait())
            waiters.add(stop)
        try:
            done, _ = await asyncio.wait(waiters, timeout=KAFKA_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stop is not None:
                stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        # not awaited (that could swallow our own cancellation); just retrieve its outcome
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError(f"{what}: no answer within {KAFKA_WAIT_S:.0f}s or shutdown requested")

    async def _produce_dlq(self, batch: Batch) -> None:
        if not batch.dlq:
            return
        producer = self.producer
        assert producer is not None

        async def produce_all() -> None:
            futures = [
                await producer.send(self.cfg.common.dlq_topic, value=rec.value, key=rec.key) for rec in batch.dlq
            ]
            await asyncio.gather(*futures)

        await self._kafka_wait("DLQ produce", produce_all())
        for rec in batch.dlq[:5]:
            log.info("to DLQ: %s", rec.value[:300].decode("utf-8", errors="replace"))
        if len(batch.dlq) > 5:
            log.info("to DLQ: ... and %d more", len(batch.dlq) - 5)

    async def _commit_pending(self) -> None:
        """Commit offsets reached by successful flushes; a failure is retried at the next flush."""
        if not self.pending_commit or self.consumer is None or self.cfg.faults.never_commit:
            return
        offsets = {tp: o for tp, o in self.pending_commit.items() if tp in self.assignment}
        # a partition we no longer own: its new owner resumes from the snapshot map
        self.pending_commit = dict(offsets)
        if not offsets:
            return
        try:
            await self._kafka_wait("offset commit", self.consumer.commit(offsets))
        except Exception as exc:
            self.states.set("kafka commit", "failing", describe(exc), logging.WARNING)
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
                self.guard.forget(tp.topic, tp.partition)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assignment = set(assigned)
        # eager rebalancing: this is the whole new assignment, every partition is positioned anew
        self.guard.clear()
        if not assigned:
            return
        assert self.consumer is not None
        # UNSAFE_STALL_PARTITION: paused, and never positioned, so the guard also drops whatever
        # was fetched before the pause
        stalled = {tp for tp in assigned if tp.partition == self.cfg.faults.stall_partition}
        if stalled:
            self.consumer.pause(*stalled)
            log.warning("stalled partitions (UNSAFE_STALL_PARTITION): %s", sorted(tp_key(*tp) for tp in stalled))
        async with self.lock:
            if not await self.load_table():
                # shutting down before the positions are known: fetch nothing
                self.consumer.pause(*assigned)
                return
            assert self.table is not None
            snap_offsets, snap_id = snapshot_offsets(self.table)
            tps = sorted(assigned - stalled)
            consumer = self.consumer
            begins = await self._retrying("log start offsets", lambda: consumer.beginning_offsets(tps))
            ends = await self._retrying("log end offsets", lambda: consumer.end_offsets(tps))
            positions: dict[str, str] = {}
            for tp in tps:
                key = tp_key(tp.topic, tp.partition)
                committed = await self._retrying("committed offsets", partial(consumer.committed, tp))
                if committed is not None:
                    self.committed[key] = committed
                snap = None if self.cfg.unsafe_skip_idempotence else snap_offsets.get(key)
                wanted = resume_offset(snap, committed, unsafe=self.cfg.unsafe_skip_idempotence)
                target, warning = clamp_offset(wanted, begins[tp], ends[tp])
                if warning:
                    log.warning("%s: %s; starting at %d", key, warning, target)
                positions[key] = f"{target} (snapshot {snap}, committed {committed})"
                # seek and position together (no await between): records fetched before this
                # point are dropped by the guard and fetched again from the target
                self.consumer.seek(tp, target)
                self.guard.position(tp.topic, tp.partition, target)
            log.info("partitions assigned (offsets of snapshot %s): %s", snap_id, positions)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A Kafka request the rebalance cannot do without: retry until it answers (or shutdown)."""
        backoff = 0.2
        while True:
            try:
                return await asyncio.wait_for(call(), 5.0)
            except Exception as exc:
                if self.shutdown.requested:
                    raise
                self.states.set(what, "failing", describe(exc), logging.WARNING)
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
                # a fetch answers once 16 KiB are there or 50 ms passed: with the default of one byte each
                # pass of the loop fetched a few records, a third more CPU per record in this process
                # (50 ms adds ~25 ms to the consumer stage at low rates, against a 500 ms flush interval)
                fetch_max_wait_ms=50,
                fetch_min_bytes=16 * 1024,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            # set before start(): the first assignment (and its listener) runs inside start()
            self.producer, self.consumer = producer, consumer
            try:
                await producer.start()
                consumer.subscribe([common.raw_topic], listener=_Rebalance(self))
                await consumer.start()
                return True
            except Exception as exc:
                self.states.set("kafka clients", "start failed", str(exc), logging.WARNING)
                self.producer = self.consumer = None
                await close_quietly("consumer", consumer.stop(), 1.0)
                await close_quietly("DLQ producer", producer.stop(), 1.0)
            await self.shutdown.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    async def consume(self) -> None:
        assert self.consumer is not None
        interval = self.cfg.flush_interval_ms / 1000
        next_flush = time.monotonic() + interval
        next_stall_check = time.monotonic() + STALL_CHECK_S
        while not self.shutdown.requested:
            # while flushes fail, stop fetching once the buffer is large: memory stays bounded
            if self.flush_failing and len(self.buffer) >= 5 * self.cfg.flush_max_rows:
                self.stall_watch.reset()  # not fetching on purpose
                await self.shutdown.wait(interval)
            else:
                wait_ms = max(1, min(100, int((next_flush - time.monotonic()) * 1000)))
                try:
                    data = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.cfg.flush_max_rows)
                except Exception as exc:
                    self.states.set("fetch", "failing", describe(exc), logging.WARNING)
                    await self.shutdown.wait(0.5)
                    continue
                self.states.set("fetch", "ok")
                for tp, records in data.items():
                    for rec in records:
                        if not self.guard.accept(tp.topic, tp.partition, rec.offset):
                            self.dropped_unpositioned += 1
                            continue
                        self.buffer.add(tp.topic, tp.partition, rec.offset, rec.timestamp, rec.key, rec.value)
                if time.monotonic() >= next_stall_check:
                    stalled = await self._stalled(time.monotonic())
                    next_stall_check = time.monotonic() + STALL_CHECK_S
                    if stalled:
                        # seen after a broker restart: the client stays connected, fetches nothing, and never
                        # recovers; new clients resume from the table's offsets map, so nothing is written twice
                        await self._reconnect(f"{', '.join(stalled)}: records waiting, none taken in {STALL_S:.0f}s")
                        continue
            now = time.monotonic()
            if self.reappend is not None and now >= self.reappend[1]:
                await self._reappend()
            if self.late:
                await self._late_changes(self.late.due(now))
            if len(self.buffer) >= self.cfg.flush_max_rows:
                await self.flush(reason="max_rows")
                next_flush = time.monotonic() + interval
            elif now >= next_flush:
                await self.flush(reason="interval")
                next_flush = max(next_flush + interval, time.monotonic())
            if now - self._summary_at >= SUMMARY_EVERY_S:
                log.info(
                    "last %.0fs: %d rows written (total %d, DLQ %d), snapshot %s, committed %s",
                    now - self._summary_at,
                    self._summary_rows,
                    self.stats["rows_written"],
                    self.stats["dlq_records"],
                    self.stats["snapshot_id"],
                    self.committed,
                )
                self._summary_at, self._summary_rows = now, 0

    async def _stalled(self, now: float) -> list[str]:
        """Partitions whose records wait while none was taken in for STALL_S (StallWatch); ``now`` is
        monotonic time."""
        consumer = self.consumer
        taken = self.guard.positions()
        if consumer is None or not taken or not self.watchdog.ok:
            # Kafka itself not answering (or nothing positioned yet) says nothing about the client
            self.stall_watch.reset()
            return []
        ends: dict[tuple[str, int], int] | None
        try:
            answer = await self._kafka_wait("end offsets", consumer.end_offsets([TopicPartition(*k) for k in taken]))
            ends = {(tp.topic, tp.partition): offset for tp, offset in answer.items()}
            self.states.set("stall check", "ok")
        except Exception as exc:  # Kafka answers the watchdog but not this client: counted as not moving
            self.states.set("stall check", "client not answering", describe(exc), logging.WARNING)
            ends = None
        return [tp_key(*key) for key in self.stall_watch.check(taken, ends, now)]

    async def _reconnect(self, why: str) -> None:
        """Write what is buffered, then replace the Kafka clients (a new member of the group)."""
        log.warning("Kafka clients stalled (%s): reconnecting", why)
        await self.flush(reason="reconnect")
        if self.consumer is not None:
            await close_quietly("consumer", self.consumer.stop(), 2.0)
        if self.producer is not None:
            await close_quietly("DLQ producer", self.producer.stop(), 1.0)
        self.consumer = self.producer = None
        self.assignment = set()
        # the new client is positioned anew (on_assigned); nothing it fetches before that is taken in
        self.guard.clear()
        self.stall_watch.reset()
        if not await self._start_kafka():
            self.shutdown.event.set()

    async def stop(self) -> None:
        """Graceful: final flush (+ the unsafe mode's only commit), leave the group, close clients."""
        if self.consumer is not None:
            self.final_flush = True
            try:
                async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                    ok = await self.flush(reason="shutdown")
                    if self.cfg.unsafe_skip_idempotence:
                        async with self.lock:
                            await self._commit_pending()
                    if not ok:
                        log.error("final flush failed: %d rows not written (Kafka re-delivers them)", len(self.buffer))
            except TimeoutError:
                log.error("final flush did not finish within %.1fs", SHUTDOWN_FLUSH_S)
            await close_quietly("consumer", self.consumer.stop(), 1.0)
        if self.producer is not None:
            await close_quietly("DLQ producer", self.producer.stop(), 0.5)


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
    for line in cfg.faults.warnings():
        log.warning("%s", line)
    service = Consumer(cfg, shutdown)
    http = HttpTask(health_app(service.health), cfg.health_host, cfg.health_port, "HEALTH_PORT")
    await http.start()
    service.watchdog.start()
    log.info(
        "consumer: group %s, %s (%s) -> %s (%s, flush every %d ms or %d rows), health on %s:%d",
        cfg.group,
        cfg.common.raw_topic,
        cfg.record_format.kind,
        cfg.common.iceberg_table,
        cfg.write.mode.value,
        cfg.flush_interval_ms,
        cfg.flush_max_rows,
        cfg.health_host,
        cfg.health_port,
    )
    try:
        if await service.load_table() and await service._start_kafka():
            await service.consume()
    finally:
        await service.stop()
        await service.watchdog.stop()
        await http.stop()
    if service.fatal:
        log.error("consumer stopped: %s", service.fatal)
        return 1
    log.info("consumer stopped")
    return 0


if __name__ == "__main__":
    run_main(main)
