"""The ``api`` contract reader: the fields of the API's recent records, and the status codes it answers."""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline_check.backends.api.probe import ApiSettings
from pipeline_check.backends.api.reader import ApiReader
from pipeline_check.backends.contract import SNAPSHOT_SAMPLE, ContractContext, Findings
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.contract_diff import compare_records, record_fields
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.figures import Difference

UNKNOWN_PATH = "/pipeline-check/no-such-path"


class ApiContract:
    Settings: ClassVar[type[PluginSettings]] = ApiSettings
    parts: ClassVar[tuple[str, ...]] = ("fields", "status")

    def __init__(self, settings: ApiSettings, ctx: ContractContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def check(self, spec: StageContract, found: Findings) -> None:
        stage, symbols = self.ctx.stage, self.ctx.symbols
        reader = ApiReader(self.settings, stage, self.ctx.responses)
        try:
            if spec.fields:
                records = await self._records(reader, spec.sample)
                if records:
                    found.differences += compare_records(stage, spec.fields, records, spec.exact)
                    found.checked.append(f"{stage}: {len(spec.fields)} fields in {len(records)} records")
                else:
                    found.unchecked.append(f"{stage}: no record of {', '.join(symbols)} within a day")
            keyed = bool(self.settings.headers)
            for request in spec.status:
                subject = f"GET {request.path} (key: {request.key})"
                if request.key != "configured" and not keyed:
                    found.not_applicable.append(f"{stage} {subject}: stages.{stage}.headers carry no key")
                    continue
                status = await reader.status(request.path, request.key)
                if status != request.status:
                    found.differences.append(Difference(stage, subject, f"HTTP {request.status}", f"HTTP {status}"))
            if spec.status:
                applied = len(spec.status) - sum(n.startswith(f"{stage} GET") for n in found.not_applicable)
                found.checked.append(f"{stage}: {applied} status codes")
        finally:
            await reader.close()

    async def snapshot(self) -> dict[str, Any]:
        """The fields of recent records, and what the API answers now to a plain query, an unknown path, a
        bad parameter and, where ``headers`` carry a key, no key and a wrong key."""
        settings, symbols = self.settings, self.ctx.symbols
        reader = ApiReader(settings, self.ctx.stage, self.ctx.responses)
        try:
            fields = record_fields(await self._records(reader, SNAPSHOT_SAMPLE))
            query = reader.url(symbols[0], 0, 1)  # an empty, timeless window
            requests = [(query, "configured"), (UNKNOWN_PATH, "configured")]
            if "{limit}" in settings.query:
                bad = reader.url(symbols[0], 0, 1, limit="not-a-number")
                requests.append((bad, "configured"))
            if settings.headers:
                requests += [(query, "none"), (query, "wrong")]
            status = [{"path": path, "status": await reader.status(path, key), "key": key} for path, key in requests]
        finally:
            await reader.close()
        return {"fields": fields, "status": status}

    async def _records(self, reader: ApiReader, count: int) -> list[tuple[str, Any]]:
        """Up to ``count`` recent records per symbol, as (label, record)."""
        records: list[tuple[str, Any]] = []
        for symbol in self.ctx.symbols:
            _, found = await reader.recent(symbol, self.ctx.now_ms)
            records += [(f"{symbol} record {i}", r) for i, r in enumerate(found[:count])]
        return records
