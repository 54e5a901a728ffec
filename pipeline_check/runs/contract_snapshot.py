"""``pipeline-check contract --snapshot``: the stages' current schemas as a starting ``[contract]``.

Iceberg columns come from the table's schema; Kafka and API fields from the newest records (a field's
JSON types are those seen, and it is required when every record holds it); the API's status codes are
what it answers now to a plain query, a bad parameter, an unknown path and, where ``headers`` carry a
key, no key and a wrong key. Review it before use: it states what is, not what should be.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

from pipeline_check.backends.api.reader import ApiReader
from pipeline_check.config import PipelineConfig, StageSection
from pipeline_check.runs.contract import api_records, json_type_of, newest_records, symbols_of, table_columns
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.response_times import ResponseTimes

SAMPLE = 20
UNKNOWN_PATH = "/pipeline-check/no-such-path"
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def record_fields(records: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Top-level fields of JSON-object records: name -> {type (seen ones, |-joined), required}."""
    objects = [r for _, r in records if isinstance(r, dict)]
    names = sorted({key for r in objects for key in r})
    return {
        name: {
            "type": "|".join(sorted({json_type_of(r[name]) for r in objects if name in r})),
            "required": all(name in r for r in objects),
        }
        for name in names
    }


async def snapshot(config: PipelineConfig, now_ms: int) -> dict[str, dict[str, Any]]:
    """Per stage with something to declare, its ``[contract.STAGE]`` table as data."""
    tables: dict[str, dict[str, Any]] = {}
    for section in config.stages:
        if section.type == "iceberg":
            columns = await asyncio.to_thread(table_columns, section)
            tables[section.name] = {"columns": {n: {"type": t, "required": r} for n, (t, r) in columns.items()}}
        elif section.type == "kafka_topic":
            tables[section.name] = {"fields": record_fields(await newest_records(section, SAMPLE))}
        elif section.type == "api":
            tables[section.name] = await _api(section, symbols_of(config), now_ms)
    for data in tables.values():  # what is written must load back as a contract
        StageContract.model_validate(data)
    return tables


async def _api(section: StageSection, symbols: tuple[str, ...], now_ms: int) -> dict[str, Any]:
    settings = section.settings
    reader = ApiReader(settings, section.name, ResponseTimes())  # type: ignore[arg-type]  # an api stage's settings
    try:
        fields = record_fields(await api_records(reader, symbols, SAMPLE, now_ms))
        query = reader.url(symbols[0], 0, 1)  # an empty, timeless window
        requests = [(query, "configured"), (UNKNOWN_PATH, "configured")]
        if "{limit}" in settings.query:  # type: ignore[attr-defined]
            bad = settings.query.format(  # type: ignore[attr-defined]
                symbol=symbols[0], start_ms=0, end_ms=1, limit="not-a-number", tag_lo=0, tag_hi=0
            )
            requests.append((bad, "configured"))
        if settings.headers:  # type: ignore[attr-defined]
            requests += [(query, "none"), (query, "wrong")]
        status = [{"path": path, "status": await reader.status(path, key), "key": key} for path, key in requests]
    finally:
        await reader.close()
    return {"fields": fields, "status": status}


def to_toml(tables: Mapping[str, Mapping[str, Any]], source: str) -> str:
    """``tables`` as ``[contract.STAGE]`` sections (status list first, then the columns or fields)."""
    lines = [
        f"# The stages' schemas as {source} reaches them now (pipeline-check contract --snapshot).",
        "# A starting contract: it states what is, not what should be. Review it, then keep it in pipeline.toml.",
    ]
    for stage, data in tables.items():
        lines += ["", f"[contract.{_key(stage)}]"]
        if data.get("status"):
            lines.append("status = [")
            lines += [f"    {_inline(entry)}," for entry in data["status"]]
            lines.append("]")
        for part in ("columns", "fields"):
            if part in data:
                lines += [f"[contract.{_key(stage)}.{part}]"]
                lines += [f"{_key(name)} = {_inline(spec)}" for name, spec in data[part].items()]
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def _inline(table: Mapping[str, Any]) -> str:
    return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in table.items()) + " }"
