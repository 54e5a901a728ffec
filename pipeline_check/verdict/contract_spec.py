"""``[contract]``: what each stage must hold, validated when pipeline.toml loads.

::

    [contract.iceberg]                          # a stage of type iceberg: the table's columns
    columns = { trade_id = { type = "long", required = true }, price = "decimal(18,8)" }
    [contract.kafka]                            # type kafka_topic: fields of the records' JSON
    fields = { t = "integer", p = "string", m = { type = "boolean", required = false } }
    sample = 20                                 # newest records read to check them
    [contract.api]                              # type api: fields of the records, and status codes
    fields = { trade_id = "integer", price = "string" }
    status = [{ path = "/nope", status = 404 }, { path = "/v1/trades", status = 401, key = "none" }]

Column types are Iceberg's, written ``long``, ``decimal(18,8)``, ``timestamp(us, UTC)`` (``timestamptz``
is read as that), ``timestamp(ns)``...; a column's ``required`` is checked when given. Field types are
JSON's: ``string integer number boolean object array null``, alternatives joined by ``|``; a field is
required unless ``required = false``. A status request's ``key`` says what it sends of the API stage's
``headers`` (the credentials): ``configured`` (as set), ``none`` (left out) or ``wrong`` (the secret
replaced); the last two apply only where ``headers`` are set. ``exact = true`` makes columns or fields the
contract does not name differences too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")
_PLAIN = ("string", "boolean", "float", "double", "date", "time", "uuid", "binary")
_ALIASES = {
    "long": "long",
    "bigint": "long",
    "int64": "long",
    "int": "int",
    "integer": "int",
    "int32": "int",
    "timestamptz": "timestamp(us, UTC)",
    "timestamp": "timestamp(us)",
    "timestamp_ns": "timestamp(ns)",
    "timestamptz_ns": "timestamp(ns, UTC)",
}
_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
_TIMESTAMP = re.compile(r"^timestamp(tz)?\((us|ns)(,utc)?\)$")
_FIXED = re.compile(r"^fixed\[(\d+)\]$")
TYPE_HINT = "e.g. long, string, decimal(18,8), timestamp(us, UTC), timestamp(ns)"


def column_type(text: str) -> str:
    """The canonical form of an Iceberg type's text (``decimal(18, 8)`` -> ``decimal(18,8)``,
    ``timestamptz`` -> ``timestamp(us, UTC)``); ``ValueError`` for a type Iceberg does not have."""
    compact = re.sub(r"\s+", "", text).lower()
    if compact in _ALIASES:
        return _ALIASES[compact]
    if compact in _PLAIN:
        return compact
    if m := _DECIMAL.match(compact):
        return f"decimal({int(m[1])},{int(m[2])})"
    if m := _TIMESTAMP.match(compact):
        return f"timestamp({m[2]}, UTC)" if m[1] or m[3] else f"timestamp({m[2]})"
    if m := _FIXED.match(compact):
        return f"fixed[{int(m[1])}]"
    if compact.startswith(("struct<", "list<", "map<")):
        return " ".join(text.split())
    raise ValueError(f"{text!r} is not an Iceberg type ({TYPE_HINT})")


def json_type(text: str) -> str:
    """``"integer | null"`` -> ``"integer|null"`` (sorted); ``ValueError`` for a name JSON does not have."""
    names = sorted({part.strip().lower() for part in text.split("|")})
    unknown = [n for n in names if n not in JSON_TYPES]
    if unknown or not names:
        raise ValueError(f"{text!r} is not a JSON type; use {', '.join(JSON_TYPES)}, alternatives joined by |")
    return "|".join(names)


def _table(value: Any) -> Any:
    """A bare type string is shorthand for ``{ type = ... }``."""
    return {"type": value} if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Model):
    type: str
    required: bool | None = None  # None: not checked

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return column_type(value)


class FieldSpec(_Model):
    type: str
    required: bool = True

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return json_type(value)


class StatusSpec(_Model):
    path: str = Field(pattern=r"^/")  # with its query string, relative to the API stage's base_url
    status: int = Field(ge=100, le=599)
    key: Literal["configured", "none", "wrong"] = "configured"


Column = Annotated[ColumnSpec, BeforeValidator(_table)]
RecordField = Annotated[FieldSpec, BeforeValidator(_table)]


class StageContract(_Model):
    """One stage's part of the contract."""

    columns: dict[str, Column] = Field(default_factory=dict)
    fields: dict[str, RecordField] = Field(default_factory=dict)
    status: tuple[StatusSpec, ...] = ()
    sample: int = Field(default=20, ge=1, le=10_000)
    exact: bool = False

    def parts(self) -> tuple[str, ...]:
        """The parts it declares: ``columns``, ``fields``, ``status``."""
        return tuple(name for name in ("columns", "fields", "status") if getattr(self, name))
