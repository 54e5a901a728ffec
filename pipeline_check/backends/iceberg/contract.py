"""The ``iceberg`` contract reader: the table's columns, from its schema."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pipeline_check.backends.contract import ContractContext, Findings
from pipeline_check.backends.iceberg.probe import IcebergSettings
from pipeline_check.backends.iceberg.tables import open_table
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.contract_diff import compare_columns
from pipeline_check.verdict.contract_spec import StageContract, column_type


class TableContract:
    Settings: ClassVar[type[PluginSettings]] = IcebergSettings
    parts: ClassVar[tuple[str, ...]] = ("columns",)

    def __init__(self, settings: IcebergSettings, ctx: ContractContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def check(self, spec: StageContract, found: Findings) -> None:
        stage = self.ctx.stage
        actual = await asyncio.to_thread(self.columns)
        found.differences += compare_columns(stage, spec.columns, actual, spec.exact)
        found.checked.append(f"{stage}: {len(spec.columns)} columns")

    async def snapshot(self) -> dict[str, Any]:
        columns = await asyncio.to_thread(self.columns)
        return {"columns": {n: {"type": t, "required": r} for n, (t, r) in columns.items()}}

    def columns(self) -> dict[str, tuple[str, bool]]:
        """The table's columns: name -> (canonical type, required)."""
        table = open_table(self.settings, self.ctx.stage)
        return {f.name: (column_type(str(f.field_type)), f.required) for f in table.schema().fields}
