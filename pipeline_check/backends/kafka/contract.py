"""The ``kafka_topic`` contract reader: the fields of the topic's newest records (JSON)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pipeline_check.backends.contract import SNAPSHOT_SAMPLE, ContractContext, Findings
from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.backends.kafka.topic_probe import KafkaTopicSettings
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.verdict.contract_diff import compare_records, record_fields
from pipeline_check.verdict.contract_spec import StageContract


class TopicContract:
    Settings: ClassVar[type[PluginSettings]] = KafkaTopicSettings
    parts: ClassVar[tuple[str, ...]] = ("fields",)

    def __init__(self, settings: KafkaTopicSettings, ctx: ContractContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def check(self, spec: StageContract, found: Findings) -> None:
        stage = self.ctx.stage
        records = await self.newest_records(spec.sample)
        if not records:
            found.unchecked.append(f"{stage}: the topic holds no record")
            return
        found.differences += compare_records(stage, spec.fields, records, spec.exact)
        found.checked.append(f"{stage}: {len(spec.fields)} fields in {len(records)} records")

    async def snapshot(self) -> dict[str, Any]:
        return {"fields": record_fields(await self.newest_records(SNAPSHOT_SAMPLE))}

    async def newest_records(self, count: int) -> list[tuple[str, Any]]:
        """The ``count`` newest records of the topic (by broker time), as (label, decoded JSON)."""
        settings = self.settings
        reader = RecordReader(settings.bootstrap, settings.topic, f"stages.{self.ctx.stage}.bootstrap")
        try:
            await reader.start()
            ends, begins = await reader.ends(), await reader.begins()
            batches = await reader.read({tp: (max(begins[tp], end - count), end) for tp, end in ends.items()})
        finally:
            await reader.close()
        records = sorted((r for rs in batches.values() for r in rs), key=lambda r: r.timestamp, reverse=True)
        return [(f"partition {r.partition} offset {r.offset}", _decoded(r.value)) for r in records[:count]]


def _decoded(value: bytes | None) -> Any:
    try:
        return json.loads(value) if value is not None else None
    except ValueError:
        return value.decode("utf-8", "replace") if value is not None else None
