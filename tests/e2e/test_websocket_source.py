"""The ``websocket`` source in the real engine, against real WebSocket subscribers (in-process ingestor
stand-ins) and a probe that reads what they received: dialects, routing by subscription, canaries
riding the subscribed symbols, ``wss://`` with the run's CA, reconnects at the maximum connection age,
and the per-subscriber notes. No Kafka: each run takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from pipeline_check.backends.capabilities import PROBES
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.coverage import partition_of
from pipeline_check.canary.fidelity import Fields
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import EndpointError
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.pytest_plugin import free_ports
from pipeline_check.runs.driver import Outcome, run_async
from pipeline_check.verdict.status import Status

pytestmark = pytest.mark.e2e

# what the subscribers received, per pipe: (symbol the record names, the record as a client parses it)
PIPES: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
RECONNECT = 0.05  # a subscriber's pause before dialling again, as the reference ingestor's first backoff


class PipeStageSettings(PluginSettings):
    pipe: str
    tag_field: str
    shards: int = Field(default=0, ge=0)  # partitions of a topic keyed by the record's symbol
    symbol_field: str = "s"
    fields: Fields = Field(default_factory=dict)


class PipeProbe:
    """Sees each record a subscriber received (its tag, its fields) when it lands in the pipe."""

    Settings: ClassVar[type[PluginSettings]] = PipeStageSettings

    def __init__(self, settings: PipeStageSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._cursor = 0

    async def start(self) -> None:
        PIPES[self.settings.pipe].clear()
        if self.settings.shards:
            self.ctx.recorder.declare_shards(self.ctx.stage, range(self.settings.shards))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._look()
            await asyncio.sleep(0.01)

    async def finish(self) -> None:
        self._look()

    @property
    def resolution(self) -> float:
        return 0.01

    def _look(self) -> None:
        s, ctx = self.settings, self.ctx
        pipe = PIPES[s.pipe]
        now = ctx.clock.now()
        while self._cursor < len(pipe):
            record = pipe[self._cursor]
            self._cursor += 1
            tag = record[s.tag_field]
            symbol = str(record[s.symbol_field]).replace("/", "")
            ref = Ref(partition_of(symbol, s.shards), self._cursor) if s.shards else None
            if ctx.recorder.seen(ctx.stage, tag, now, ref=ref) and s.fields:
                ctx.recorder.diff(ctx.stage, tag, record, s.fields)


@pytest.fixture(autouse=True)
def pipe_probe() -> None:
    PROBES.add("pipe", f"{__name__}:PipeProbe")


@dataclass
class Subscriber:
    """An ingestor stand-in: dials ``path``, sends ``requests`` after every connect, keeps the trade
    records it gets (all, or only those of ``keep``), and dials again whenever the feed closes."""

    path: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    keep: frozenset[str] | None = None
    ca: Path | None = None
    tamper: Callable[[dict[str, Any]], None] | None = None
    connects: int = 0

    async def run(self, url: str, pipe: str) -> None:
        while True:
            try:
                context = ssl.create_default_context(cafile=self.ca) if self.ca else None
                async with connect(url + self.path, ssl=context, open_timeout=2) as ws:
                    self.connects += 1
                    for request in self.requests:
                        await ws.send(json.dumps(request))
                    async for frame in ws:
                        for record in trade_records(frame):
                            symbol = str(record.get("s", record.get("symbol"))).replace("/", "")
                            if self.keep is None or symbol in self.keep:
                                if self.tamper:
                                    self.tamper(record)
                                PIPES[pipe].append(record)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass  # the feed is not up yet, or it closed this connection: dial again
            await asyncio.sleep(RECONNECT)


def trade_records(frame: str | bytes) -> list[dict[str, Any]]:
    """Trade records in a Binance (raw or combined) or Kraken v2 message, decimals as ``Decimal``."""
    message = json.loads(frame, parse_float=Decimal)
    if "data" in message and "stream" in message:
        return [message["data"]]
    if message.get("channel") == "trade":
        return list(message["data"])
    return [message] if "e" in message else []


SOURCE = """
[source]
type = "websocket"
host = "127.0.0.1"
port = {port}
subscribe_timeout = "{timeout}"
{source}

[stages.kafka]
type = "pipe"
upstream = "source"
pipe = "{pipe}"
{stage}

[load]
count = {count}
rate = {rate}
background_rate = 20
settle = 0
drain_timeout = "3s"

[sla]
thresholds = ["lost == 0", "duplicates == 0", "corrupted == 0"]
"""


def config(
    tmp_path: Path, *, source: str, stage: str, count: int = 60, rate: float = 40, timeout: str = "10s"
) -> tuple[PipelineConfig, str]:
    """The run's settings on a free port, and the feed's base URL."""
    port = free_ports(["feed"])["feed"]
    path = tmp_path / "pipeline.toml"
    path.write_text(
        SOURCE.format(
            port=port, timeout=timeout, source=source, pipe=tmp_path.name, stage=stage, count=count, rate=rate
        )
    )
    scheme = "wss" if "tls" in source else "ws"
    return load_config(path, {}), f"{scheme}://127.0.0.1:{port}"


def validate(cfg: PipelineConfig, url: str, subscribers: list[Subscriber], pipe: str) -> Outcome:
    """One run with ``subscribers`` dialling the feed; they stop with it."""

    async def main() -> Outcome:
        tasks = [asyncio.create_task(s.run(url, pipe)) for s in subscribers]
        try:
            return await run_async(cfg)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def statuses(outcome: Outcome) -> dict[str, Status]:
    return {r.threshold: r.status for r in outcome.finished.results}


NOTE = re.compile(
    r"^subscriber \S+ on (?P<path>\S+) \((?P<streams>[^)]*)\) for [\d.]+s, (?P<ended>[^:]+): (?P<n>[\d,]+) canaries"
)


def subscriber_notes(outcome: Outcome) -> list[re.Match[str]]:
    return [m for note in outcome.finished.notes if (m := NOTE.match(note))]


def kraken_subscribe(*pairs: str) -> dict[str, Any]:
    return {"method": "subscribe", "params": {"channel": "trade", "symbol": list(pairs)}, "req_id": 1}


BINANCE_STAGE = 'tag_field = "t"\nfields = { s = "s", p = "p:decimal", q = "q:decimal", m = "m", T = "T:ms" }'
KRAKEN_FIELDS = (
    'fields = { symbol = "symbol", price = "price:decimal", qty = "qty:decimal", side = "side", '
    'timestamp = "timestamp", trade_id = "trade_id", ord_type = "ord_type" }'
)


def test_kraken_canaries_ride_each_replicas_pairs_and_compare_with_krakens_record(tmp_path: Path):
    cfg, url = config(
        tmp_path,
        source='dialect = "kraken"\nsubscribers = 2\ncanaries_ride = "subscribed"',
        stage=f'tag_field = "trade_id"\nsymbol_field = "symbol"\n{KRAKEN_FIELDS}',
    )
    replicas = [
        Subscriber("/v2", [kraken_subscribe("BTC/USD")], keep=frozenset({"BTCUSD"})),
        Subscriber("/v2", [kraken_subscribe("ETH/USD", "SOL/USD")], keep=frozenset({"ETHUSD", "SOLUSD"})),
    ]
    outcome = validate(cfg, url, replicas, tmp_path.name)
    assert set(statuses(outcome).values()) == {Status.PASSED}, outcome.finished.results
    assert outcome.finished.summary.compared, "no field was compared"
    assert "canaries ride the subscribed symbols BTCUSD, ETHUSD, SOLUSD" in outcome.finished.notes
    notes = subscriber_notes(outcome)
    by_stream = {m["streams"]: int(m["n"].replace(",", "")) for m in notes}
    # canaries are dealt over the three pairs in turn: a third to the first replica, two thirds to the other
    assert by_stream == {"trade:BTC/USD": 20, "trade:ETH/USD, trade:SOL/USD": 40}, outcome.finished.notes
    assert all(m["ended"] == "open until the feed closed" for m in notes)


def test_a_changed_field_of_krakens_record_is_caught(tmp_path: Path):
    cfg, url = config(
        tmp_path,
        source='dialect = "kraken"\ncanaries_ride = "subscribed"',
        stage=f'tag_field = "trade_id"\nsymbol_field = "symbol"\n{KRAKEN_FIELDS}',
        count=20,
    )

    def flip(record: dict[str, Any]) -> None:
        record["side"] = "buy" if record["side"] == "sell" else "sell"

    outcome = validate(cfg, url, [Subscriber("/v2", [kraken_subscribe("BTC/USD")], tamper=flip)], tmp_path.name)
    check = outcome.result("corrupted == 0")
    assert check.status == Status.FAILED and check.observed == 20, check.detail
    assert {d.field for d in outcome.finished.summary.diffs} == {"side"}


def test_own_symbol_canaries_are_carried_on_the_subscribed_stream_and_lost_by_an_ingestor_that_drops_them(
    tmp_path: Path,
):
    cfg, url = config(tmp_path, source='path_prefix = "/stream"', stage=BINANCE_STAGE, count=20)
    path = "/stream?streams=btcusdt@trade"
    carried = validate(cfg, url, [Subscriber(path)], tmp_path.name)
    assert set(statuses(carried).values()) == {Status.PASSED}, carried.finished.results
    assert {r["s"] for r in PIPES[tmp_path.name] if r["t"] >= 2**62} == {"CANARYUSDT"}
    dropping = validate(cfg, url, [Subscriber(path, keep=frozenset({"BTCUSDT"}))], tmp_path.name)
    lost = dropping.result("lost == 0")
    assert lost.status == Status.FAILED and lost.observed == 20
    assert [int(m["n"]) for m in subscriber_notes(dropping)] == [20]  # sent to it, dropped by it


def test_subscribed_symbols_that_miss_partitions_say_so_in_the_coverage_check(tmp_path: Path):
    stage = 'tag_field = "t"\nshards = 3'
    cfg, url = config(tmp_path, source='canaries_ride = "subscribed"', stage=stage, count=20)
    cfg = cfg.with_overrides(None, thresholds=("coverage == 100%",))
    # BTCUSDT alone keys to one partition of three
    outcome = validate(cfg, url, [Subscriber("/ws/btcusdt@trade")], tmp_path.name)
    coverage = outcome.result("coverage == 100%")
    assert coverage.status == Status.FAILED
    assert "canaries rode the symbols the source chose (BTCUSDT), not symbols chosen to cover every partition" in (
        coverage.detail
    )
    assert statuses(outcome)["lost == 0"] == Status.PASSED


def test_reconnects_at_the_maximum_connection_age_lose_nothing(tmp_path: Path):
    source = 'max_connection_age = "1s"\ncanaries_ride = "subscribed"'
    cfg, url = config(tmp_path, source=source, stage=BINANCE_STAGE, count=150, rate=50)
    subscriber = Subscriber("/stream", [{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}])
    outcome = validate(cfg, url, [subscriber], tmp_path.name)
    assert set(statuses(outcome).values()) == {Status.PASSED}, outcome.finished.results
    retired = [m for m in subscriber_notes(outcome) if m["ended"] == "closed at the maximum connection age (1s)"]
    assert len(retired) >= 2 and subscriber.connects >= 3
    assert sum(int(m["n"].replace(",", "")) for m in subscriber_notes(outcome)) == 150


def test_wss_with_a_ca_made_for_the_run(tmp_path: Path):
    folder = tmp_path / "tls"
    source = f'tls = {{ generate = true, folder = "{folder}" }}'
    cfg, url = config(tmp_path, source=source, stage=BINANCE_STAGE, count=20)
    assert url.startswith("wss://")
    # the CA is written when the run starts: the subscriber reads it on each dial (missing until then), as
    # the reference ingestor reads FEED_CA_FILE
    subscriber = Subscriber("/ws/btcusdt@trade", ca=folder / "feed-ca.pem")
    outcome = validate(cfg, url, [subscriber], tmp_path.name)
    assert set(statuses(outcome).values()) == {Status.PASSED}, outcome.finished.results
    assert any(f"signed by the CA in {folder / 'feed-ca.pem'}" in n for n in outcome.finished.notes)


def test_a_connection_following_no_trade_stream_is_no_subscriber(tmp_path: Path):
    cfg, url = config(tmp_path, source="", stage=BINANCE_STAGE, count=5, timeout="1s")
    with pytest.raises(EndpointError) as error:
        validate(cfg, url, [Subscriber("/ws")], tmp_path.name)
    assert "no ingestor subscribed within 1s (0 of 1 connection(s) follow a trade stream)" in str(error.value)
    assert f"is the ingestor running and dialling {url}/?" in str(error.value)
