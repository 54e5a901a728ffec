"""Kafka helpers shared by ingestor and consumer: topic creation and a reachability watchdog.

Topics are created with TOPIC_REPLICATION_FACTOR replicas (default 1: the single broker) and, when set,
TOPIC_MIN_INSYNC_REPLICAS (the cluster profile: 3 and 2, so an acks=all write survives one node's loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from .common import CommonConfig, Shutdown, StateLog, describe, env_int, env_optional_int, fail, load_config

log = logging.getLogger(__name__)

# Each reachability probe must answer within this many seconds (the health contract: 503 within 5 s).
PROBE_TIMEOUT_S = 2.0
PROBE_INTERVAL_S = 1.0


def _admin(bootstrap: str, client_id: str) -> AIOKafkaAdminClient:
    # Short timeouts: these clients answer health questions, they must not hang for the 40 s default.
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
        retry_backoff_ms=100,
        metadata_max_age_ms=5000,
    )


async def close_quietly(what: str, closing: Awaitable[Any], timeout: float) -> None:
    """Close an aiokafka client within ``timeout``, whatever state Kafka is in.

    aiokafka's ``stop()`` can leak a CancelledError of its own fetch tasks when Kafka is down (the
    fetcher cancels a task sleeping in its retry backoff and re-raises), which would abort the rest
    of a graceful shutdown; only a cancellation of *our* task is passed on.
    """
    try:
        await asyncio.wait_for(closing, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.info("%s: closed (its pending requests were cancelled)", what)
    except Exception as exc:
        log.info("%s: not closed cleanly: %s", what, describe(exc))


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """How the services create their topics: replicas and the writes acks=all waits for."""

    replication_factor: int = 1
    min_insync_replicas: int | None = None  # None: the broker's default

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TopicSettings:
        replicas = env_int("TOPIC_REPLICATION_FACTOR", 1, minimum=1, maximum=32, env=env)
        min_isr = env_optional_int("TOPIC_MIN_INSYNC_REPLICAS", minimum=1, maximum=32, env=env)
        if min_isr is not None and min_isr > replicas:
            fail(
                "TOPIC_MIN_INSYNC_REPLICAS",
                str(min_isr),
                f"must be at most TOPIC_REPLICATION_FACTOR ({replicas}): acks=all writes would always fail",
            )
        return cls(replicas, min_isr)

    def new_topic(self, name: str, partitions: int) -> NewTopic:
        configs = {} if self.min_insync_replicas is None else {"min.insync.replicas": str(self.min_insync_replicas)}
        return NewTopic(
            name, num_partitions=partitions, replication_factor=self.replication_factor, topic_configs=configs
        )


async def ensure_topics(cfg: CommonConfig, shutdown: Shutdown, client_id: str) -> bool:
    """Create the raw topic (RAW_TOPIC_PARTITIONS) and the DLQ topic (1 partition) if missing, with
    ``TopicSettings`` from the environment (a bad value ends the service with exit code 2).

    Retries until Kafka answers, and until enough brokers run for the replicas (logging once per state
    change); False if shutdown came first.
    """
    topics = load_config(TopicSettings.from_env)
    states = StateLog(log)
    backoff = 0.1
    while not shutdown.requested:
        admin = _admin(cfg.kafka_bootstrap, client_id)
        try:
            await asyncio.wait_for(admin.start(), PROBE_TIMEOUT_S * 2)
            existing = set(await admin.list_topics())
            wanted = [topics.new_topic(cfg.raw_topic, cfg.raw_topic_partitions), topics.new_topic(cfg.dlq_topic, 1)]
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                # create one by one: a TopicAlreadyExists on one (a concurrent creator) must not hide
                # an error on the other
                for topic in missing:
                    response = await admin.create_topics([topic])
                    _, code, *message = response.topic_errors[0]
                    if code == TopicAlreadyExistsError.errno:
                        continue
                    if code:  # e.g. fewer brokers registered than replicas asked for: retried
                        raise for_code(code)(f"creating {topic.name}: {''.join(message)}")
                    log.info(
                        "created topic %s (%d partitions, %d replicas%s)",
                        topic.name,
                        topic.num_partitions,
                        topic.replication_factor,
                        f", min.insync.replicas {topics.min_insync_replicas}" if topics.min_insync_replicas else "",
                    )
            meta = await admin.describe_topics([cfg.raw_topic])
            partitions = meta[0]["partitions"] if meta else []
            if partitions and len(partitions) != cfg.raw_topic_partitions:
                log.warning(
                    "topic %s has %d partitions, RAW_TOPIC_PARTITIONS=%d; using the existing topic",
                    cfg.raw_topic,
                    len(partitions),
                    cfg.raw_topic_partitions,
                )
            replicas = {len(p["replicas"]) for p in partitions}
            if replicas and replicas != {topics.replication_factor}:
                log.warning(
                    "topic %s has %s replicas per partition, TOPIC_REPLICATION_FACTOR=%d; using the existing topic",
                    cfg.raw_topic,
                    "/".join(map(str, sorted(replicas))),
                    topics.replication_factor,
                )
            return True
        except Exception as exc:  # any failure: Kafka not up yet, retry
            states.set("kafka", "waiting to create topics", describe(exc), logging.WARNING)
        finally:
            await close_quietly("admin client", admin.close(), 1.0)
        await shutdown.wait(backoff)
        backoff = min(backoff * 2, 2.0)
    return False


class KafkaWatchdog:
    """Checks every second that Kafka answers a metadata request (2 s timeout).

    Uses its own admin client so a stuck producer/consumer request cannot delay the answer; the
    admin client is recreated after a failure because a client that never bootstrapped cannot
    recover on its own.
    """

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._states = StateLog(log)
        self.ok = False
        self.reason = "not checked yet"
        self.checked_at: float | None = None
        self.cluster: dict[str, Any] = {}

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"unreachable: {self.reason}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_admin()

    async def _close_admin(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await close_quietly("health admin client", admin.close(), 1.0)

    async def check(self) -> None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                if self._admin is None:
                    admin = _admin(self._bootstrap, self._client_id)
                    self._admin = admin
                    await admin.start()
                info = await self._admin.describe_cluster()
            self.cluster = {"cluster_id": info.get("cluster_id"), "brokers": len(info.get("brokers", []))}
            self.ok, self.reason = True, ""
            self._states.set("kafka", "reachable")
        except Exception as exc:
            self.ok = False
            self.reason = "timeout after 2s" if isinstance(exc, TimeoutError) else describe(exc)
            self._states.set("kafka", "unreachable", self.reason, logging.WARNING)
            await self._close_admin()
        finally:
            self.checked_at = time.time()

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(PROBE_INTERVAL_S)
