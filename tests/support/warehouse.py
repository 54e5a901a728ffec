"""A ``warehouse`` stage type from outside the package: one module, registered once with every capability a
stage can offer (probe, passive sampler, contract reader, cleanup), proving the run modes, the contract
check and cleanup reach a stage only through the capability registry.

The warehouse is an in-process table: every trade of the memory pipe (:mod:`tests.support.memory`) becomes a
row ``delay`` seconds after it was sent.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field

from pipeline_check.backends.capabilities import STAGE_TYPES, StageType
from pipeline_check.backends.cleanup import Deleted, Found, Selection
from pipeline_check.backends.contract import ContractContext, Findings
from pipeline_check.backends.probe import ProbeContext
from pipeline_check.backends.sampler import Reading, SamplerContext, age
from pipeline_check.canary.tags import parse
from pipeline_check.canary.trades import Trade
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.contract_diff import compare_columns
from pipeline_check.verdict.contract_spec import StageContract
from tests.support.memory import PIPES

COLUMNS = {"trade_id": ("long", True), "symbol": ("string", True), "price": ("decimal(18,8)", False)}


def register() -> None:
    """Offer the warehouse as ``type = "warehouse"`` in this process: its one registration."""
    STAGE_TYPES.add(
        "warehouse",
        StageType(
            probe=f"{__name__}:WarehouseProbe",
            sampler=f"{__name__}:WarehouseSampler",
            contract=f"{__name__}:WarehouseContract",
            cleanup=f"{__name__}:WarehouseCleanup",
        ),
    )


class WarehouseSettings(PluginSettings):
    pipe: str = "default"
    table: str = "trades"
    delay: float = Field(default=0.02, ge=0)


def rows(settings: WarehouseSettings, now: float) -> list[tuple[float, Trade]]:
    """The rows the table holds at monotonic time ``now``: (sent at, trade), deleted ones left out."""
    gone = DELETED.get(settings.table, set())
    return [(at, t) for at, t in PIPES[settings.pipe] if at + settings.delay <= now and t.trade_id not in gone]


DELETED: dict[str, set[int]] = {}  # table -> trade ids a cleanup deleted


class WarehouseProbe:
    Settings: ClassVar[type[PluginSettings]] = WarehouseSettings

    def __init__(self, settings: WarehouseSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def start(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._look()
            await asyncio.sleep(0.005)

    async def finish(self) -> None:
        self._look()

    @property
    def resolution(self) -> float:
        return 0.005

    def _look(self) -> None:
        now = self.ctx.clock.now()
        for _, trade in rows(self.settings, now):
            if trade.seq is not None:
                self.ctx.recorder.seen(self.ctx.stage, trade.trade_id, now, copies=1)


class WarehouseSampler:
    Settings: ClassVar[type[PluginSettings]] = WarehouseSettings
    provides: ClassVar[tuple[str, ...]] = ("freshness",)

    def __init__(self, settings: WarehouseSettings, ctx: SamplerContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def start(self) -> None:
        pass

    async def sample(self) -> Reading:
        clock = self.ctx.clock
        held = rows(self.settings, clock.now())
        if not held:
            return Reading(detail="the table holds no row")
        newest = max(at for at, _ in held)
        seconds, ahead = age(clock.wall(clock.now()) * 1000, clock.wall(newest) * 1000)
        return Reading({"freshness": seconds}, len(held), ahead_s=ahead, detail=f"{len(held)} rows")

    async def close(self) -> None:
        pass


class WarehouseContract:
    Settings: ClassVar[type[PluginSettings]] = WarehouseSettings
    parts: ClassVar[tuple[str, ...]] = ("columns",)

    def __init__(self, settings: WarehouseSettings, ctx: ContractContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def check(self, spec: StageContract, found: Findings) -> None:
        found.differences += compare_columns(self.ctx.stage, spec.columns, COLUMNS, spec.exact)
        found.checked.append(f"{self.ctx.stage}: {len(spec.columns)} columns")

    async def snapshot(self) -> dict[str, Any]:
        return {"columns": {name: {"type": t, "required": r} for name, (t, r) in COLUMNS.items()}}


class WarehouseCleanup:
    Settings: ClassVar[type[PluginSettings]] = WarehouseSettings
    system: ClassVar[str] = "warehouse"

    def __init__(self, settings: WarehouseSettings, where: str) -> None:
        self.settings = settings
        self.where = where

    def plan(self, selection: Selection) -> Found:
        per_run: dict[Any, int] = {}
        for _, trade in rows(self.settings, float("inf")):
            parsed = parse(trade.trade_id)
            if parsed is not None and selection.lo <= trade.trade_id <= selection.hi:
                per_run[parsed[0]] = per_run.get(parsed[0], 0) + 1
        return Found(self.settings.table, selection, per_run)

    def delete(self, found: Found) -> Deleted:
        sel = found.selection
        doomed = {t.trade_id for _, t in rows(self.settings, float("inf")) if sel.lo <= t.trade_id <= sel.hi}
        DELETED.setdefault(self.settings.table, set()).update(doomed)
        return Deleted(None, "delete", len(doomed), 0)
