"""Kafka probe scan rate: how fast the ``kafka_topic`` probe reads a production-like raw topic to find its
canaries, against Kafka's own ``ConsumerPerformance`` (kafka-consumer-perf-test) on the same topic and broker.

The topic has 3 partitions and is filled with ``RECORDS`` background trades in the reference ingestor's form
(JSON, lz4-compressed batches of up to 64 KiB; ``ProducerPerformance --payload-file`` with trades the message
factory made), then one canary per partition at the end of each. Every round's probe takes its baseline
before the fill (as a run's probe does before injection), so it must read every record to reach its
canaries; the time from ``run()`` to the last canary seen gives records per second. ``ConsumerPerformance``
reads the same records from the start (its ``fetch.nMsg.sec``: group join excluded). Rounds alternate, ours
then theirs, so a noisy neighbour slows both alike. Rounds of the probe without its batch filter (every
record parsed and, holding the run's digits or not, looked at) show what the filter is worth.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.common import ROUNDS, Figure, Spread, book_for, create_topic, java_tool, number, probe_for, versus
from pipeline_check.backends.kafka.topic_probe import KafkaTopicProbe
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import PipelineConfig
from pipeline_check.trace.book import TraceBook

TOPIC = "bench-scan"
PARTITIONS = 3
RECORDS = 2_000_000
PAYLOADS = 2_000  # distinct background trades ProducerPerformance picks from
GOAL = 0.5
SCAN_TIMEOUT = 120.0


def _payloads(path: Path) -> None:
    factory = TradeFactory(
        RunId.new(), seed=7, count=1, symbols=("CANARYUSDT",), background_symbols=("BTCUSDT", "ETHUSDT")
    )
    path.write_text("".join(factory.background(1_750_000_000_000 + i).to_json() + "\n" for i in range(PAYLOADS)))


def _fill(bootstrap: str, payloads: Path) -> dict[str, Any]:
    out = java_tool(
        "ProducerPerformance",
        ["--topic", TOPIC, "--num-records", str(RECORDS), "--payload-file", str(payloads), "--throughput", "-1",
         "--producer-props", f"bootstrap.servers={bootstrap}", "acks=1", "compression.type=lz4", "linger.ms=5",
         "batch.size=65536"],
        timeout=600,
    )  # fmt: skip
    return {"records_per_s": number(rf"{RECORDS} records sent, ([\d.]+) records/sec", out)}  # the final line


class _Probe:
    """One round's probe: its own run (tags), baseline taken before the fill, canaries sent after it."""

    def __init__(self, bootstrap: str, *, filtered: bool) -> None:
        config = PipelineConfig.model_validate(
            {"source": {"type": "kafka"}, "stages": {"kafka": {"bootstrap": bootstrap, "topic": TOPIC}}}
        )
        self.book: TraceBook = book_for(config, PARTITIONS)
        probe = probe_for(config, "kafka", self.book)
        if not isinstance(probe, KafkaTopicProbe):
            raise TypeError(f"expected the kafka_topic probe, got {probe!r}")
        self.probe = probe
        if not filtered:  # the probe as it was: every record parsed, every value decoded
            probe._needle = probe._tap.needle = b""

    async def canaries(self, producer: AIOKafkaProducer) -> None:
        """One canary at the end of each partition."""
        for seq in range(PARTITIONS):
            trade = self.book.inject(seq, self.book.clock.now())
            await producer.send_and_wait(TOPIC, trade.to_json().encode(), partition=seq)

    async def scan(self) -> dict[str, float]:
        """Run the probe until it saw its canaries; records per second over the whole topic, CPU per record."""
        stop = asyncio.Event()
        began, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(self.probe.run(stop))
        try:
            deadline = began + SCAN_TIMEOUT
            while self.book.reached("kafka") < PARTITIONS:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"the probe saw {self.book.reached('kafka')} of {PARTITIONS} canaries")
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
            seconds = time.perf_counter() - began
            used = time.process_time() - cpu
        finally:
            stop.set()
            await task
            await self.probe.finish()
        tap = self.probe._tap
        return {
            "records_per_s": (RECORDS + PARTITIONS) / seconds,
            "seconds": seconds,
            "cpu_us_per_record": 1e6 * used / RECORDS,
            "batches": tap.batches,
            "batches_emptied": tap.emptied,
            "fetched_mb": self.probe.ctx.load.bytes.get("fetches", 0) / 1e6,
        }


def _theirs(bootstrap: str, round_: int, records: int) -> dict[str, float]:
    out = java_tool(
        "ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", TOPIC, "--messages", str(records),
         "--group", f"bench-scan-{round_}", "--timeout", "60000"],
        timeout=300,
    )  # fmt: skip
    row = [field.strip() for field in out.strip().splitlines()[-1].split(",")]
    consumed = int(float(row[4]))  # data.consumed.in.nMsg
    if consumed != records:  # it timed out waiting for more: its rate would count the wait
        raise RuntimeError(f"ConsumerPerformance read {consumed:,} of {records:,} records:\n{out[-1500:]}")
    return {"records_per_s": float(row[-1]), "fetch_ms": float(row[-3])}


async def _rounds(bootstrap: str, payloads: Path) -> dict[str, Any]:
    """Start every round's probes (baselines, then paused), fill the topic, send each probe's canaries, then
    alternate rounds: ours, ConsumerPerformance, ours without the batch filter (all on one event loop: a
    probe's client lives on the loop that started it)."""
    ours = [_Probe(bootstrap, filtered=True) for _ in range(ROUNDS)]
    unfiltered = [_Probe(bootstrap, filtered=False) for _ in range(ROUNDS)]
    for p in [*ours, *unfiltered]:
        await p.probe.start()
        consumer = p.probe._consumer
        assert consumer is not None
        p.probe._pause(consumer, True)  # no prefetching while other rounds run
    fill = await asyncio.to_thread(_fill, bootstrap, payloads)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for p in [*ours, *unfiltered]:
            await p.canaries(producer)
    finally:
        await producer.stop()
    records = RECORDS + PARTITIONS * len([*ours, *unfiltered])  # the background trades and every probe's canaries
    rounds: dict[str, Any] = {"fill": fill, "ours": [], "theirs": [], "unfiltered": []}
    for round_ in range(ROUNDS):
        rounds["ours"].append(await ours[round_].scan())
        rounds["theirs"].append(await asyncio.to_thread(_theirs, bootstrap, round_, records))
        rounds["unfiltered"].append(await unfiltered[round_].scan())
    return rounds


def run(bootstrap: str) -> Figure:
    """The probe's scan rate over a filled raw topic vs ConsumerPerformance, rounds alternating."""
    create_topic(bootstrap, TOPIC, PARTITIONS)
    with tempfile.TemporaryDirectory(prefix="pc-bench-scan-") as tmp:
        payloads = Path(tmp) / "trades.json"
        _payloads(payloads)
        rounds = asyncio.run(_rounds(bootstrap, payloads))
    ours, theirs, unfiltered, fill = rounds["ours"], rounds["theirs"], rounds["unfiltered"], rounds["fill"]
    headline, values, ratio = versus(
        [r["records_per_s"] for r in ours], [r["records_per_s"] for r in theirs], "ConsumerPerformance"
    )
    plain = Spread.of([r["records_per_s"] for r in unfiltered])
    return Figure(
        name="kafka_probe_scan",
        title="Kafka probe scan rate",
        headline=f"{headline}; without the batch filter {plain.text('{:,.0f}')} records/s",
        goal=f"ratio >= {GOAL} of ConsumerPerformance on the same topic and broker",
        met=ratio.median >= GOAL,
        values={
            **values,
            "unfiltered_records_per_s": plain.to_json(0),
            "ours": ours,
            "theirs": theirs,
            "unfiltered": unfiltered,
            "fill": fill,
            "records": RECORDS,
            "partitions": PARTITIONS,
        },
        notes=f"{RECORDS:,} background trades (JSON, lz4 batches of up to 64 KiB) in {PARTITIONS} partitions, one "
        "canary at the end of each; ours: from run() to the last canary seen (baseline taken before the fill); "
        "theirs: fetch.nMsg.sec; rounds alternate ours / theirs / ours without the batch filter",
    )
