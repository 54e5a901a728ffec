"""Ingestor: WebSocket trade feed -> Kafka raw topic.

It does not judge content (the consumer validates); the key is the record's "s" field when there is
one. ``FEED_MODE`` says how it talks to the feed (``feed_modes``): Binance raw streams, frames unchanged
(the default); Binance combined streams with a SUBSCRIBE frame; Kraken v2, mapped to the Binance-shaped
record. A ``wss://`` feed is trusted through ``FEED_CA_FILE`` (else the system's CAs, which
``SSL_CERT_FILE`` can name), re-read on every connect: a validator writes a new CA for each run.
Reconnects forever with capped exponential backoff (50 ms .. 1 s), because the feed is often absent
(the validator brings it up per run).

Shutdown (SIGTERM): send the WebSocket close frame but keep reading until the server's close frame
arrives — frames the server sent before it saw ours are still delivered by ``recv()`` (websockets
keeps data frames received while CLOSING and hands out the buffered ones after the connection is
closed) — then flush the producer.

With RECORD_FORMAT=avro (record_format.py) each frame is produced as an Avro record of the registered
schema instead; a frame that does not fit it is logged and counted ("rejected" in /health), not produced.

The producer (producers.py): PRODUCER_CLIENT=aiokafka (default) | confluent (librdkafka, CRC32 partitioner),
KAFKA_COMPRESSION=lz4 (default) | none | gzip | snappy | zstd; acks=all with idempotence, unless the
deliberate fault UNSAFE_PRODUCER_ACKS=1 (acks=1, idempotence off: records lost across a leader change).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from .common import (
    CommonConfig,
    ConfigError,
    HttpTask,
    Shutdown,
    StateLog,
    describe,
    env_bool,
    env_choice,
    env_port,
    env_str,
    health_app,
    load_config,
    run_main,
    setup_logging,
    utc_ms,
)
from .feed_modes import MODES, FeedMode
from .kafka_util import KafkaWatchdog, close_quietly, ensure_topics
from .producers import Producer, ProducerSettings, make_producer
from .record_format import AvroEncoder, RecordError, RecordFormat

log = logging.getLogger("ingestor")

BACKOFF_START_S = 0.05
BACKOFF_CAP_S = 1.0
# sends not yet acknowledged; beyond this the reader waits (and TCP pushes back on the feed)
MAX_IN_FLIGHT = 20_000
# shutdown budget (SIGTERM -> exit within ~5 s even with Kafka down): drain, flush, close
DRAIN_TIMEOUT_S = 1.5
FLUSH_TIMEOUT_S = 1.5


@dataclass(frozen=True, slots=True)
class IngestorConfig:
    common: CommonConfig
    feed_url: str
    health_host: str
    health_port: int
    feed: FeedMode
    ca_file: str | None  # PEM CA(s) a wss:// feed is trusted through, re-read on every connect
    record_format: RecordFormat
    producer: ProducerSettings

    @classmethod
    def from_env(cls) -> IngestorConfig:
        url = env_str("FEED_URL")
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"FEED_URL={url!r} (env): must be a ws:// or wss:// URL")
        common = CommonConfig.from_env()
        symbols = tuple(s.strip() for s in env_str("FEED_SYMBOLS", "").split(",") if s.strip())
        return cls(
            common=common,
            feed_url=url,
            health_host=env_str("HEALTH_HOST", "127.0.0.1"),
            health_port=env_port("HEALTH_PORT"),
            feed=FeedMode(
                env_choice("FEED_MODE", "binance-raw", MODES), url, symbols, env_bool("DROP_UNSUBSCRIBED", False)
            ),
            ca_file=env_str("FEED_CA_FILE", "") or None,
            record_format=RecordFormat.from_env(common.raw_topic),
            producer=ProducerSettings.from_env(),
        )

    def feed_tls(self) -> ssl.SSLContext | None:
        """The TLS context of a wss:// feed, trusting ``FEED_CA_FILE`` as it is now."""
        if not self.feed_url.startswith("wss://"):
            return None
        if self.ca_file is not None and not os.path.exists(self.ca_file):
            raise FileNotFoundError(
                f"FEED_CA_FILE {self.ca_file} does not exist (yet: a validator writes it as its feed starts)"
            )
        return ssl.create_default_context(cafile=self.ca_file)


def record_key(frame: bytes) -> bytes | None:
    """The frame's "s" field as the record key; None when the frame is not a JSON object with one."""
    try:
        event = json.loads(frame)
    except ValueError:
        return None
    symbol = event.get("s") if isinstance(event, dict) else None
    return symbol.encode("utf-8") if isinstance(symbol, str) and symbol else None


class Ingestor:
    def __init__(self, cfg: IngestorConfig, shutdown: Shutdown) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        self.watchdog = KafkaWatchdog(cfg.common.kafka_bootstrap, "ingestor-health")
        self.states = StateLog(log)
        self.producer: Producer | None = None
        self.ws: ClientConnection | None = None
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.in_flight = 0
        self.all_delivered = asyncio.Event()
        self.all_delivered.set()
        self.stats: dict[str, Any] = {
            "received": 0,
            "produced": 0,
            "dropped": 0,
            "resent": 0,
            "connects": 0,
            "last_message_ms": None,
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.encoder: AvroEncoder | None = None  # RECORD_FORMAT=avro: frames are produced as Avro records

    async def send(self, record: bytes, key: bytes | None) -> None:
        """Produce one JSON trade record as it is, or as its Avro record (one that does not fit the schema is
        counted and logged, not produced)."""
        value = record
        if self.encoder is not None:
            try:
                value = self.encoder.encode(record)
            except RecordError as exc:
                self.stats["rejected"] = self.stats.get("rejected", 0) + 1
                log.warning("not produced: %s: %s", exc, record[:200].decode("utf-8", errors="replace"))
                return
        await self.produce(value, key)

    def health(self) -> tuple[bool, dict[str, Any]]:
        # the feed being absent is normal (the validator brings it); only Kafka decides health
        return self.watchdog.ok, {
            "status": "ok" if self.watchdog.ok else "unhealthy",
            "kafka": self.watchdog.status,
            "feed": "connected" if self.ws is not None else "disconnected",
            "feed_url": self.cfg.feed_url,
            "feed_mode": self.cfg.feed.mode,
            "producer": self.cfg.producer.describe(),
            "topic": self.cfg.common.raw_topic,
            "in_flight": self.in_flight,
            **self.stats,
        }

    # ------------------------------------------------------------------ Kafka

    async def start_producer(self) -> bool:
        if not await ensure_topics(self.cfg.common, self.shutdown, "ingestor-admin"):
            return False
        backoff = 0.2
        while not self.shutdown.requested:
            producer = make_producer(
                self.cfg.producer,
                self.cfg.common.kafka_bootstrap,
                "ingestor",
                linger_ms=5,
                batch_bytes=256 * 1024,
            )
            try:
                await producer.start()
                self.producer = producer
                return True
            except Exception as exc:
                self.states.set("producer", "start failed", str(exc), logging.WARNING)
                await close_quietly("producer", producer.stop(), 1.0)
            await self.shutdown.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    async def produce(self, value: bytes, key: bytes | None) -> None:
        """Hand one frame to the producer without waiting for its acknowledgement."""
        assert self.producer is not None
        await self.slots.acquire()
        while True:
            try:
                future = await self.producer.send(self.cfg.common.raw_topic, value=value, key=key)
                break
            except Exception as exc:
                # metadata or buffer space unavailable (Kafka down): nothing was queued, so retry the
                # same frame; meanwhile the feed is not read and TCP pushes back on the server
                self.states.set("produce", "blocked", describe(exc), logging.WARNING)
                await asyncio.sleep(0.2)
        self.states.set("produce", "ok")
        self.in_flight += 1
        self.all_delivered.clear()
        future.add_done_callback(lambda f: self._delivered(f, value, key))

    def _delivered(self, future: asyncio.Future[Any], value: bytes, key: bytes | None) -> None:
        self.in_flight -= 1
        self.slots.release()
        if future.cancelled() or future.exception() is not None:
            # the batch expired or failed for good: queue the frame again (at least once beats losing it)
            exc = None if future.cancelled() else future.exception()
            self.states.set("delivery", "failed, re-sending", repr(exc), logging.WARNING)
            self.stats["resent"] += 1
            self.all_delivered.clear()
            task = asyncio.get_running_loop().create_task(self.produce(value, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.stats["produced"] += 1
        if self.in_flight == 0 and not self._tasks:
            self.all_delivered.set()

    # ------------------------------------------------------------------ feed

    async def run_feed(self) -> None:
        """Dial the feed forever; produce every frame; on shutdown drain until the close handshake."""
        backoff = BACKOFF_START_S
        while not self.shutdown.requested:
            try:
                async with connect(
                    self.cfg.feed_url,
                    ssl=self.cfg.feed_tls(),
                    open_timeout=2,
                    close_timeout=DRAIN_TIMEOUT_S,
                    # keepalive pings would time out while Kafka is down and the reader stalls
                    ping_interval=None,
                    max_queue=4096,
                    max_size=1 << 20,
                ) as ws:
                    self.ws = ws
                    self.stats["connects"] += 1
                    self.states.set("feed", "connected", self.cfg.feed_url)
                    backoff = BACKOFF_START_S
                    for request in self.cfg.feed.requests():
                        await ws.send(request)
                    while True:
                        try:
                            frame = await ws.recv(decode=False)
                        except ConnectionClosedOK:
                            break
                        self.stats["received"] += 1
                        self.stats["last_message_ms"] = utc_ms()
                        if self.cfg.feed.passthrough:
                            await self.send(frame, record_key(frame))
                        else:
                            await self.produce_records(frame)
                self.states.set(
                    "feed",
                    "disconnected",
                    "closed by the server" if not self.shutdown.requested else "closed for shutdown",
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.states.set("feed", "disconnected", describe(exc))
            finally:
                self.ws = None
            if not self.shutdown.requested:
                await self.shutdown.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    async def produce_records(self, frame: bytes) -> None:
        """The records a frame gives in the feed's mode; replies are logged, unsubscribed trades dropped."""
        got = self.cfg.feed.read(frame)
        if got.reply is not None:
            self.states.set(
                "feed reply", "error" if got.error else "ok", got.reply, logging.WARNING if got.error else logging.INFO
            )
        self.stats["dropped"] += got.dropped
        for value, key in got.records:
            await self.send(value, key)

    async def stop(self, feed_task: asyncio.Task[None] | None) -> None:
        """Stop reading (after draining what the server already sent), then flush the producer."""
        started = time.monotonic()
        if feed_task is not None:
            ws = self.ws
            if ws is not None:
                # close() sends our close frame; run_feed keeps reading until the server's arrives
                closer = asyncio.create_task(ws.close())
                self._tasks.add(closer)
                closer.add_done_callback(self._tasks.discard)
            try:
                await asyncio.wait_for(asyncio.shield(feed_task), DRAIN_TIMEOUT_S + 0.3)
            except TimeoutError:
                log.warning("feed did not close within %.1fs; abandoning it", DRAIN_TIMEOUT_S + 0.3)
                feed_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed_task
        if self.producer is not None:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    await self.producer.flush()
                    await self.all_delivered.wait()
            except TimeoutError:
                log.error("producer flush timed out: %d messages not acknowledged", self.in_flight)
            await close_quietly("producer", self.producer.stop(), 0.7)
        log.info(
            "stopped after %.1fs: received %d, produced %d, re-sent %d, unacknowledged %d",
            time.monotonic() - started,
            self.stats["received"],
            self.stats["produced"],
            self.stats["resent"],
            self.in_flight,
        )


async def main() -> int:
    setup_logging("ingestor")
    cfg = load_config(IngestorConfig.from_env)
    for line in cfg.producer.warnings():
        log.warning("%s", line)
    shutdown = Shutdown()
    shutdown.install()
    service = Ingestor(cfg, shutdown)
    if cfg.record_format.avro:
        service.encoder = await asyncio.to_thread(AvroEncoder, cfg.record_format)
    http = HttpTask(health_app(service.health), cfg.health_host, cfg.health_port, "HEALTH_PORT")
    await http.start()
    service.watchdog.start()
    log.info(
        "ingestor: %s -> %s (%s), health on %s:%d",
        cfg.feed_url,
        cfg.common.raw_topic,
        cfg.producer.describe(),
        cfg.health_host,
        cfg.health_port,
    )
    feed_task: asyncio.Task[None] | None = None
    try:
        if await service.start_producer():
            feed_task = asyncio.create_task(service.run_feed(), name="feed")
            await shutdown.wait()
    finally:
        await service.stop(feed_task)
        await service.watchdog.stop()
        await http.stop()
    return 0


if __name__ == "__main__":
    run_main(main)
