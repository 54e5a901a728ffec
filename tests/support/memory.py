"""In-memory injector and probe: test-only plugins that run the real engine without Kafka.

The injector appends every trade to a named in-process "pipe"; each probe watches one stage of that
pipe and sees a canary ``delay`` seconds after it was sent, except the canaries its settings drop; it
can duplicate, corrupt and retract canaries, and declare partitions, so every verdict the engine gives
can be produced on purpose in well under a second.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import ClassVar

from pydantic import Field

from pipeline_check.backends.capabilities import INJECTORS, PROBES
from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.fidelity import Fields
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
    shards: int = 0  # partitions to declare; canary seq lands on seq % shards
    empty_shard: int | None = None  # a partition canaries never land on
    fields: Fields = Field(default_factory=dict)


class MemoryProbe:
    Settings: ClassVar[type[PluginSettings]] = MemoryStageSettings

    def __init__(self, settings: MemoryStageSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._cursor = 0
        self._shown: list[int] = []

    async def start(self) -> None:
        if self.settings.shards:
            self.ctx.recorder.declare_shards(self.ctx.stage, range(self.settings.shards))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._look()
            await asyncio.sleep(0.005)

    async def finish(self) -> None:
        self._look()
        now = self.ctx.clock.now()
        for tag in self._shown:
            if (tag & 0x3FFFFFF) in self.settings.retract:
                self.ctx.recorder.seen(self.ctx.stage, tag, now, copies=0)

    @property
    def resolution(self) -> float:
        return 0.005

    def _look(self) -> None:
        s, ctx = self.settings, self.ctx
        now = ctx.clock.now()
        ctx.load.add("requests", LOOK_BYTES)  # a look costs the pipe one request, as a real probe's would
        pipe = PIPES[s.pipe]
        while self._cursor < len(pipe) and pipe[self._cursor][0] + s.delay <= now:
            _, trade = pipe[self._cursor]
            self._cursor += 1
            seq = trade.seq
            if seq is None or seq in s.drop:
                continue
            ref = None
            if s.shards:
                shard = seq % s.shards
                ref = Ref(shard if shard != s.empty_shard else (shard + 1) % s.shards, seq)
            copies = 2 if seq in s.duplicate else 1
            view = bool(s.retract)
            ctx.recorder.seen(ctx.stage, trade.trade_id, now, ref=ref, copies=copies if view else None)
            if not view and copies == 2:
                ctx.recorder.seen(ctx.stage, trade.trade_id, now)
            self._shown.append(trade.trade_id)
            if s.fields:
                record = trade.to_dict()
                if seq in s.corrupt:
                    record["p"] = "0.00000002"
                ctx.recorder.diff(
                    ctx.stage,
                    trade.trade_id,
                    {k: record.get(spec.split(":")[0]) for k, spec in s.fields.items()},
                    s.fields,
                )
