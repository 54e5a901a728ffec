"""Comparing what a stage holds with its declared ``[contract]``: columns against a table's schema, fields
against sampled records (and, for a starting contract, the fields records hold). The outcome of every
stage's comparison is one check (threshold text ``contract``) whose detail is the readable diff, one line
per difference (:func:`contract_result`). The backends' contract readers read the stages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline_check.verdict.contract_spec import ColumnSpec, FieldSpec
from pipeline_check.verdict.figures import ContractFigures, Difference
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.thresholds import CONTRACT

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
