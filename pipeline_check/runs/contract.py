"""``[contract]`` over the configured stages: each stage's declared contract checked by its type's contract
reader (:mod:`pipeline_check.backends.contract`), and ``pipeline-check contract --snapshot``: the stages'
current schemas as a starting ``[contract]`` (TOML).

Iceberg columns come from the table's schema; Kafka and API fields from the newest records (a field's JSON
types are those seen, and it is required when every record holds it); the API's status codes are what it
answers now. Review a snapshot before use: it states what is, not what should be.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.backends.contract import ContractContext, Findings
from pipeline_check.config import PipelineConfig
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.figures import ContractFigures
from pipeline_check.verdict.response_times import ResponseTimes

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


async def check_contract(config: PipelineConfig, responses: ResponseTimes, now_ms: int) -> ContractFigures:
    """Every stage's declared contract against what it holds now; API requests are timed into ``responses``."""
    found = Findings()
    for name, spec in config.contract.items():
        section = config.stage(name)
        if section is None:  # the config's own validation names it; a copy edited in code may not
            raise ValueError(f"contract.{name}: no such stage")
        reader = STAGE_TYPES.contract(section.type)
        if reader is not None:
            ctx = ContractContext(name, responses, config.query_symbols, now_ms)
            await reader(section.settings, ctx).check(spec, found)
    return found.figures()


async def snapshot(config: PipelineConfig, now_ms: int) -> dict[str, dict[str, Any]]:
    """Per stage whose type has a contract reader, its ``[contract.STAGE]`` table as data."""
    tables: dict[str, dict[str, Any]] = {}
    for section in config.stages:
        reader = STAGE_TYPES.contract(section.type)
        if reader is not None:
            ctx = ContractContext(section.name, ResponseTimes(), config.query_symbols, now_ms)
            tables[section.name] = await reader(section.settings, ctx).snapshot()
    for data in tables.values():  # what is written must load back as a contract
        StageContract.model_validate(data)
    return tables


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
