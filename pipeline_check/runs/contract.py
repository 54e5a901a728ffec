"""Checking ``[contract]`` against the stages as they are: the Iceberg table's schema, the newest Kafka
records, the API's records and status codes. The outcome is one check (threshold text ``contract``)
whose detail is the readable diff, one line per difference."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_check.backends.api.reader import ApiReader
from pipeline_check.backends.iceberg.tables import open_table
from pipeline_check.backends.kafka.records import RecordReader
from pipeline_check.config import PipelineConfig, StageSection
from pipeline_check.verdict.contract_spec import ColumnSpec, FieldSpec, StageContract, column_type
from pipeline_check.verdict.figures import ContractFigures, Difference
from pipeline_check.verdict.response_times import ResponseTimes
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import CONTRACT, CheckResult

SHOWN = 80  # characters of a value quoted in a difference
_MISSING = object()


def json_type_of(value: Any) -> str:
    """The JSON type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def type_fits(value: Any, declared: str) -> bool:
    """Whether ``value`` is one of the ``|``-joined JSON types (``number`` takes integers too)."""
    found = json_type_of(value)
    allowed = declared.split("|")
    return found in allowed or (found == "integer" and "number" in allowed)


def lookup(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``a.b``), or ``_MISSING`` where a key is absent (null is a value)."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def column_text(kind: str, required: bool | None) -> str:
    return kind if required is None else f"{kind} {'required' if required else 'optional'}"


def compare_columns(
    stage: str, columns: Mapping[str, ColumnSpec], actual: Mapping[str, tuple[str, bool]], exact: bool
) -> list[Difference]:
    """Declared columns against the table's (name -> (canonical type, required))."""
    diffs = []
    for name, spec in columns.items():
        if name not in actual:
            diffs.append(Difference(stage, f"column {name}", column_text(spec.type, spec.required), "no such column"))
            continue
        kind, required = actual[name]
        wrong_type = kind != spec.type
        wrong_required = spec.required is not None and spec.required != required
        if wrong_type or wrong_required:
            checked = required if spec.required is not None else None
            expected = column_text(spec.type, spec.required)
            diffs.append(Difference(stage, f"column {name}", expected, column_text(kind, checked)))
    if exact:
        diffs += [
            Difference(stage, f"column {name}", "no such column (exact = true)", column_text(*actual[name]))
            for name in actual
            if name not in columns
        ]
    return diffs


def compare_records(
    stage: str, fields: Mapping[str, FieldSpec], records: list[tuple[str, Any]], exact: bool
) -> list[Difference]:
    """Declared fields against sampled records (label, decoded JSON), one difference per field at most."""
    diffs = []
    n = len(records)
    objects = [(label, r) for label, r in records if isinstance(r, dict)]
    for label, record in records:
        if not isinstance(record, dict):
            diffs.append(Difference(stage, f"record {label}", "a JSON object", _quote(record)))
    for name, spec in fields.items():
        values = [(label, lookup(r, name)) for label, r in objects]
        missing = [label for label, v in values if v is _MISSING]
        if missing and spec.required:
            diffs.append(
                Difference(
                    stage,
                    f"field {name}",
                    f"{spec.type} (required)",
                    f"missing in {len(missing)} of {n} records, e.g. {missing[0]}",
                )
            )
        wrong = [(label, v) for label, v in values if v is not _MISSING and not type_fits(v, spec.type)]
        if wrong:
            kinds = "|".join(sorted({json_type_of(v) for _, v in wrong}))
            label, value = wrong[0]
            diffs.append(
                Difference(
                    stage,
                    f"field {name}",
                    spec.type,
                    f"{kinds} in {len(wrong)} of {n} records, e.g. {label}: {_quote(value)}",
                )
            )
    if exact:
        extra = sorted({key for _, r in objects for key in r if key not in fields and not _declared_under(key, fields)})
        for key in extra:
            holding = sum(key in r for _, r in objects)
            diffs.append(
                Difference(
                    stage, f"field {key}", "no such field (exact = true)", f"present in {holding} of {n} records"
                )
            )
    return diffs


def _declared_under(key: str, fields: Iterable[str]) -> bool:
    return any(name.startswith(f"{key}.") for name in fields)


def _quote(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


@dataclass(slots=True)
class _Findings:
    differences: list[Difference] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def symbols_of(config: PipelineConfig) -> tuple[str, ...]:
    """The symbols a passive look asks the API about."""
    return config.passive.symbols or config.messages.background_symbols


async def check_contract(config: PipelineConfig, responses: ResponseTimes, now_ms: int) -> ContractFigures:
    """Every stage's declared contract against what it holds now."""
    found = _Findings()
    for name, spec in config.contract.items():
        section = config.stage(name)
        if section is None:  # the config's own validation names it; a copy edited in code may not
            raise ValueError(f"contract.{name}: no such stage")
        if section.type == "iceberg":
            await _iceberg(section, spec, found)
        elif section.type == "kafka_topic":
            await _kafka(section, spec, found)
        elif section.type == "api":
            await _api(section, spec, found, responses, symbols_of(config), now_ms)
    return ContractFigures(
        tuple(found.differences), tuple(found.checked), tuple(found.not_applicable), tuple(found.unchecked)
    )


def table_columns(section: StageSection) -> dict[str, tuple[str, bool]]:
    """The stage's table columns: name -> (canonical type, required)."""
    table = open_table(section.settings, section.name)  # type: ignore[arg-type]  # an iceberg stage's settings
    return {f.name: (column_type(str(f.field_type)), f.required) for f in table.schema().fields}


async def _iceberg(section: StageSection, spec: StageContract, found: _Findings) -> None:
    actual = await asyncio.to_thread(table_columns, section)
    found.differences += compare_columns(section.name, spec.columns, actual, spec.exact)
    found.checked.append(f"{section.name}: {len(spec.columns)} columns")


async def newest_records(section: StageSection, count: int) -> list[tuple[str, Any]]:
    """The ``count`` newest records of the stage's topic (by broker time), as (label, decoded JSON)."""
    settings = section.settings
    reader = RecordReader(settings.bootstrap, settings.topic, f"stages.{section.name}.bootstrap")  # type: ignore[attr-defined]
    try:
        await reader.start()
        ends, begins = await reader.ends(), await reader.begins()
        batches = await reader.read({tp: (max(begins[tp], end - count), end) for tp, end in ends.items()})
    finally:
        await reader.close()
    records = sorted((r for rs in batches.values() for r in rs), key=lambda r: r.timestamp, reverse=True)[:count]
    return [(f"partition {r.partition} offset {r.offset}", _decoded(r.value)) for r in records]


def _decoded(value: bytes | None) -> Any:
    try:
        return json.loads(value) if value is not None else None
    except ValueError:
        return value.decode("utf-8", "replace") if value is not None else None


async def _kafka(section: StageSection, spec: StageContract, found: _Findings) -> None:
    records = await newest_records(section, spec.sample)
    if not records:
        found.unchecked.append(f"{section.name}: the topic holds no record")
        return
    found.differences += compare_records(section.name, spec.fields, records, spec.exact)
    found.checked.append(f"{section.name}: {len(spec.fields)} fields in {len(records)} records")


async def api_records(reader: ApiReader, symbols: tuple[str, ...], count: int, now_ms: int) -> list[tuple[str, Any]]:
    """Up to ``count`` recent records per symbol, as (label, record)."""
    records: list[tuple[str, Any]] = []
    for symbol in symbols:
        _, found = await reader.recent(symbol, now_ms)
        records += [(f"{symbol} record {i}", r) for i, r in enumerate(found[:count])]
    return records


async def _api(
    section: StageSection,
    spec: StageContract,
    found: _Findings,
    responses: ResponseTimes,
    symbols: tuple[str, ...],
    now_ms: int,
) -> None:
    reader = ApiReader(section.settings, section.name, responses)  # type: ignore[arg-type]  # an api stage's settings
    try:
        if spec.fields:
            records = await api_records(reader, symbols, spec.sample, now_ms)
            if records:
                found.differences += compare_records(section.name, spec.fields, records, spec.exact)
                found.checked.append(f"{section.name}: {len(spec.fields)} fields in {len(records)} records")
            else:
                found.unchecked.append(f"{section.name}: no record of {', '.join(symbols)} within a day")
        keyed = bool(section.settings.headers)  # type: ignore[attr-defined]
        for request in spec.status:
            subject = f"GET {request.path} (key: {request.key})"
            if request.key != "configured" and not keyed:
                found.not_applicable.append(f"{section.name} {subject}: stages.{section.name}.headers carry no key")
                continue
            status = await reader.status(request.path, request.key)
            if status != request.status:
                found.differences.append(Difference(section.name, subject, f"HTTP {request.status}", f"HTTP {status}"))
        if spec.status:
            applied = len(spec.status) - sum(n.startswith(f"{section.name} GET") for n in found.not_applicable)
            found.checked.append(f"{section.name}: {applied} status codes")
    finally:
        await reader.close()


def contract_result(figures: ContractFigures) -> CheckResult:
    """The ``contract`` check: failed on any difference (the detail lists them, one per line),
    inconclusive when a part had nothing to check, passed otherwise."""
    checked = "checked " + "; ".join(figures.checked) if figures.checked else "nothing checked"
    extra = [f"not applicable: {n}" for n in figures.not_applicable] + [f"not checked: {u}" for u in figures.unchecked]
    n = len(figures.differences)
    if n:
        lines = [f"{n} difference{'s' if n > 1 else ''} from the contract:", *(d.text for d in figures.differences)]
        status = Status.FAILED
    elif figures.unchecked or not figures.checked:
        lines, status = [f"no difference, but not everything could be checked ({checked})"], Status.INCONCLUSIVE
    else:
        lines, status = [f"no difference ({checked})"], Status.PASSED
    detail = "\n".join([*lines, *extra])
    return CheckResult(CONTRACT, status, float(n), CONTRACT, detail, samples=len(figures.checked), kind="contract")
