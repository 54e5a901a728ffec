"""In-memory injector and probe: test-only plugins that run the real engine without Kafka.

The injector appends every trade to a named in-process "pipe"; each probe watches one stage of that
pipe and sees a canary ``delay`` seconds after it was sent, except the canaries its settings drop; it
can duplicate, corrupt, rewrite (a later version with another price), retract (and restore), move in
time, place out of order and hide until its last look (found only then) canaries, and declare
partitions (canaries land on them round robin, or by a key partitioner's hash of their symbol), so every
verdict the engine gives can be produced on purpose in well under a second.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field

from pipeline_check.backends.capabilities import INJECTORS, PROBES
from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.coverage import Placement
from pipeline_check.canary.fidelity import Fields
from pipeline_check.canary.time_forms import Instant
from pipeline_check.canary.trades import TRADE_FIELDS, Trade
from pipeline_check.core.errors import EndpointError
from pipeline_check.core.plugins import PluginSettings

PIPES: defaultdict[str, list[tuple[float, Trade]]] = defaultdict(list)
LOOK_BYTES = 100  # what one look of a memory probe counts as the answer's size


def register() -> None:
    """Offer the memory plugins as ``type = "memory"`` in this process."""
    INJECTORS.add("memory", f"{__name__}:MemoryInjector")
    PROBES.add("memory", f"{__name__}:MemoryProbe")


class MemorySourceSettings(PluginSettings):
    pipe: str = "default"
    unreachable: bool = False  # start raises EndpointError, as a source nobody subscribes to
    crash_after: int | None = None  # send raises a plain error after this many trades: a bug
    interrupt_after: int | None = None  # send raises KeyboardInterrupt after this many: Ctrl-C


class MemoryInjector:
    Settings: ClassVar[type[PluginSettings]] = MemorySourceSettings
    feeds_stage: ClassVar[str | None] = None

    @classmethod
    def sent_fields(cls, settings: MemorySourceSettings) -> tuple[str, ...]:
        return TRADE_FIELDS

    def __init__(self, settings: MemorySourceSettings, ctx: InjectorContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.sent = 0

    async def start(self) -> None:
        if self.settings.unreachable:
            raise EndpointError("source.pipe", self.settings.pipe, "nobody listens", "start the pipe")
        PIPES[self.settings.pipe].clear()
        self.ctx.note(f"memory pipe {self.settings.pipe!r} open")

    async def send(self, trade: Trade) -> None:
        if self.settings.crash_after is not None and self.sent >= self.settings.crash_after:
            raise RuntimeError("the memory injector broke")
        if self.settings.interrupt_after is not None and self.sent >= self.settings.interrupt_after:
            raise KeyboardInterrupt
        PIPES[self.settings.pipe].append((self.ctx.clock.now(), trade))
        self.sent += 1

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


class MemoryStageSettings(PluginSettings):
    pipe: str = "default"
    delay: float = Field(default=0.02, ge=0)  # seconds after sending that a canary shows up here
    drop: tuple[int, ...] = ()  # canary sequences that never show up
    duplicate: tuple[int, ...] = ()  # ... that show up twice
    corrupt: tuple[int, ...] = ()  # ... whose price shows up changed
    retract: tuple[int, ...] = ()  # ... that show up, then are gone
    retract_after: float | None = None  # ... gone this long after showing up (None: at the stage's last look)
    restore_after: float | None = None  # ... and back this long after going (None: never)
    rewrite: tuple[int, ...] = ()  # ... whose price changes rewrite_after seconds after showing up
    rewrite_after: float = 0.05
    late: tuple[int, ...] = ()  # ... found only by the stage's last look (a final sweep)
    moved: tuple[int, ...] = ()  # ... whose time field (trade_time) holds another time than the send time
    shards: int = 0  # partitions to declare; canary seq lands on seq % shards
    empty_shard: int | None = None  # a partition canaries never land on
    landing: Literal["murmur2", "crc32", "fnv1a"] | None = None  # canaries land by this hash of their symbol
    claims: Literal["murmur2", "crc32", "fnv1a", "round_robin"] | None = None  # the partitioner placement() says
    # order: positions are offsets within seq % partitions (shard not recorded, like an Iceberg column holding
    # the Kafka offset), each partition's offsets starting elsewhere; seqs in ``swap`` pairs trade places
    partitions: int = 0
    swap: tuple[int, ...] = ()
    look_every: float = Field(default=0.005, gt=0)  # seconds between looks: the stage's resolution
    batch: float = Field(default=0.0, ge=0)  # canaries show up together, at the next multiple of this (a commit)
    fields: Fields = Field(default_factory=dict)


class MemoryProbe:
    Settings: ClassVar[type[PluginSettings]] = MemoryStageSettings

    def __init__(self, settings: MemoryStageSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._cursor = 0
        self._shown: dict[int, tuple[float, Trade]] = {}  # tag -> when it showed up, the trade
        self._gone: dict[int, float] = {}  # tag -> when it went
        self._rewritten: set[int] = set()
        self._late: list[Trade] = []

    async def start(self) -> None:
        if self.settings.shards:
            self.ctx.recorder.declare_shards(self.ctx.stage, range(self.settings.shards))
        if self.settings.partitions:
            self.ctx.recorder.declare_ordered(self.ctx.stage)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._look()
            await asyncio.sleep(self.settings.look_every)

    async def finish(self) -> None:
        self._look()
        ctx = self.ctx
        now = ctx.clock.now()
        for trade in self._late:  # found by the last look only: no arrival time
            ctx.recorder.seen(ctx.stage, trade.trade_id, now, copies=self._copies(trade), timed=False)
            self._compare(trade, trade.to_dict(), now)
        if self.settings.retract_after is None:
            for tag in self._shown:
                if (tag & 0x3FFFFFF) in self.settings.retract:
                    ctx.recorder.seen(ctx.stage, tag, now, copies=0)

    @property
    def resolution(self) -> float:
        return self.settings.look_every

    def _copies(self, trade: Trade) -> int | None:
        s = self.settings
        view = bool(s.retract) or bool(s.late)
        return (2 if trade.seq in s.duplicate else 1) if view else None

    async def placement(self) -> Placement:
        from pipeline_check.backends.kafka.partitioners import configured  # Kafka only where a test asks for it

        claims = self.settings.claims
        shards = self.settings.shards
        return Placement.standard(shards) if claims is None else configured(claims, shards, "memory.claims")

    def _look(self) -> None:
        s, ctx = self.settings, self.ctx
        now = ctx.clock.now()
        ctx.load.add("requests", LOOK_BYTES)  # a look costs the pipe one request, as a real probe's would
        pipe = PIPES[s.pipe]
        while self._cursor < len(pipe) and self._due(pipe[self._cursor][0]) <= now:
            _, trade = pipe[self._cursor]
            self._cursor += 1
            seq = trade.seq
            if seq is None or seq in s.drop:
                continue
            if seq in s.late:
                self._late.append(trade)
                continue
            copies = self._copies(trade)
            ctx.recorder.seen(ctx.stage, trade.trade_id, now, ref=self._ref(seq, trade.symbol), copies=copies)
            if copies is None and seq in s.duplicate:
                ctx.recorder.seen(ctx.stage, trade.trade_id, now)
            self._shown[trade.trade_id] = (now, trade)
            record = trade.to_dict()
            if seq in s.corrupt:
                record["p"] = "0.00000002"
            self._compare(trade, record, now)
        self._later(now)

    def _due(self, sent: float) -> float:
        """When a canary sent at ``sent`` shows up: ``delay`` later, at the next batch commit if batched."""
        due = sent + self.settings.delay
        batch = self.settings.batch
        return due if not batch else math.ceil(due / batch) * batch

    def _later(self, now: float) -> None:
        """Rewrites, retractions and restorations that fell due."""
        s, ctx = self.settings, self.ctx
        for tag, (at, trade) in self._shown.items():
            if trade.seq in s.rewrite and tag not in self._rewritten and now - at >= s.rewrite_after:
                self._rewritten.add(tag)
                record = trade.to_dict()
                record["p"] = str(Decimal(trade.price) + 1)
                self._compare(trade, record, now)
            if trade.seq not in s.retract or s.retract_after is None:
                continue
            if tag not in self._gone and now - at >= s.retract_after:
                self._gone[tag] = now
                ctx.recorder.seen(ctx.stage, tag, now, copies=0)
            elif s.restore_after is not None and tag in self._gone and now - self._gone[tag] >= s.restore_after:
                self._gone[tag] = math.inf  # back for good
                ctx.recorder.seen(ctx.stage, tag, now, copies=self._copies(trade))

    def _ref(self, seq: int, symbol: str) -> Ref | None:
        s = self.settings
        if s.shards:
            shard = _hashed(s.landing, symbol, s.shards) if s.landing else seq % s.shards
            return Ref(shard if shard != s.empty_shard else (shard + 1) % s.shards, seq)
        if s.partitions:
            pair = s.swap.index(seq) if seq in s.swap else -1
            placed = seq if pair < 0 else s.swap[pair ^ 1]  # a pair's two canaries trade places
            partition = placed % s.partitions
            return Ref(-1, (s.partitions - partition) * 1_000_000 + placed // s.partitions)
        return None

    def _compare(self, trade: Trade, record: dict[str, object], now: float) -> None:
        s, ctx = self.settings, self.ctx
        if s.fields:
            held = {k: record.get(spec.split(":")[0]) for k, spec in s.fields.items()}
            ctx.recorder.diff(ctx.stage, trade.trade_id, held, s.fields, at=now)
        if trade.seq in s.moved:
            shown = trade.time_ms + 2000
            ctx.recorder.placed_at(ctx.stage, trade.trade_id, "trade_time", Instant(float(shown), 1.0), str(shown))


def _hashed(partitioner: str, symbol: str, shards: int) -> int:
    from pipeline_check.backends.kafka.partitioners import HASHES

    return HASHES[partitioner](symbol.encode(), shards)
