"""``[source.record]``: canaries (and background trades) in the pipeline's own record shape.

A template maps a trade's fields into any Avro record or JSON document::

    [source.record]
    msg_id = "{uuid}"                      # a message id (a UUID made from the tag: the same for the same canary)
    trade_ref = "BINANCE-{tag}"            # text around placeholders is formatted
    kind = "TRADE"                         # a constant (an enum symbol here)
    px = "{price}"                         # a placeholder alone keeps its type: a decimal
    qty = "{quantity}"
    taker = { from = "side", map = { BUY = "BID", SELL = "ASK" } }   # a value mapped (enum symbols)
    instrument = { symbol = "{symbol}", venue = "BINANCE" }          # a nested record
    ts = "{time}"

Placeholders: ``tag`` (the canary tag, the trade id), ``symbol``, ``price`` and ``quantity`` (decimals), ``time``
(the send time, epoch ms), ``time_iso`` (the same as ISO-8601 UTC text), ``maker`` (Binance's buyer-is-maker flag),
``side`` (the aggressor: ``BUY`` or ``SELL``), ``uuid`` (a UUID made from the tag). A placeholder alone takes the
type of the schema's field: a decimal for a ``decimal`` field, digits for a string, a float for a double, a
timestamp for ``timestamp-millis``/``-micros``; in JSON decimals are text (every digit kept) and times epoch ms.
``{from = NAME, map = {VALUE = OUT, ...}}`` maps ``side`` or ``maker`` (``true``/``false``) to constants.

With Avro the template is bound to the writer schema when the injector starts (the registry subject's latest
version, or the configured ``.avsc``): a field the schema requires (no default, not nullable) that the template
leaves out, a template field the schema lacks, or a placeholder a field cannot hold is a one-line error naming it.
What the template put in is what the fidelity diff compares a stage's fields with (``sent``: nested fields by
dotted path, ``instrument.symbol``).
"""

from __future__ import annotations

import datetime as dt
import string
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pipeline_check.canary.trades import Trade
from pipeline_check.core.errors import ConfigError

Render = Callable[[Trade], Any]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UUIDS = uuid.UUID("5b1f0d3e-8c2a-4e7b-9d61-0c9a4f2e7a10")  # the namespace message ids are made in

# placeholder -> (its kind, its value)
PLACEHOLDERS: dict[str, tuple[str, Callable[[Trade], Any]]] = {
    "tag": ("integer", lambda t: t.trade_id),
    "symbol": ("text", lambda t: t.symbol),
    "price": ("decimal", lambda t: Decimal(t.price)),
    "quantity": ("decimal", lambda t: Decimal(t.quantity)),
    "time": ("time", lambda t: t.time_ms),
    "time_iso": ("text", lambda t: _iso(t.time_ms)),
    "maker": ("boolean", lambda t: t.buyer_is_maker),
    "side": ("text", lambda t: "SELL" if t.buyer_is_maker else "BUY"),
    "uuid": ("text", lambda t: str(uuid.uuid5(_UUIDS, str(t.trade_id)))),
}
MAPPABLE = {"side": ("BUY", "SELL"), "maker": ("true", "false")}
SETTING = "source.record"


def _iso(ms: int) -> str:
    return (EPOCH + dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    """A value as it reads inside formatted text (decimals exact, booleans as JSON writes them)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _fields(text: str) -> list[tuple[str, str | None]]:
    """(literal, placeholder) parts of a template string; ValueError for a placeholder that is not one."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a template ({exc}); write placeholders as {{tag}}") from None
    for _, name, spec, conversion in parts:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise ValueError(f"{{{name}}} in {text!r} is not a placeholder; use {', '.join(PLACEHOLDERS)}")
    return [(literal, name) for literal, name, _, _ in parts]


def _mapping(spec: Mapping[str, Any]) -> bool:
    return set(spec) == {"from", "map"}


def check_template(spec: dict[str, Any]) -> dict[str, Any]:
    """A ``[source.record]`` table, checked when the config loads (an ``AfterValidator``): placeholders known,
    maps complete, the canary tag carried somewhere."""
    if not spec:
        raise ValueError('is empty; map at least the canary tag, e.g. trade_id = "{tag}"')
    if not _walk(spec, ""):
        raise ValueError("carries no {tag}: the canary tag must ride in some field (the stages' tag_field reads it)")
    return spec


def _walk(spec: Any, path: str) -> bool:
    """Check a template value; True when it carries the tag."""
    if isinstance(spec, str):
        return "tag" in {name for _, name in _fields(spec)}
    if isinstance(spec, list):
        return any([_walk(item, f"{path}[{i}]") for i, item in enumerate(spec)])
    if not isinstance(spec, dict):
        if isinstance(spec, dt.date | dt.time):
            raise ValueError(f"{path}: a TOML date or time is not a template value; write it as text")
        return False
    if _mapping(spec):
        source, table = spec["from"], spec["map"]
        if source not in MAPPABLE or not isinstance(table, dict):
            raise ValueError(f'{path}: a map reads side or maker: {{from = "side", map = {{BUY = ..., SELL = ...}}}}')
        missing = [value for value in MAPPABLE[source] if value not in table]
        if missing:
            raise ValueError(f"{path}: the map of {source} lacks {', '.join(missing)}")
        return False
    return any([_walk(value, f"{path}.{key}" if path else key) for key, value in spec.items()])


def template_fields(spec: Mapping[str, Any], prefix: str = "") -> tuple[str, ...]:
    """The fields a template writes, nested ones also by dotted path: what a stage's ``fields`` may compare."""
    names: list[str] = []
    for key, value in spec.items():
        path = f"{prefix}{key}"
        names.append(path)
        if isinstance(value, dict) and not _mapping(value):
            names += template_fields(value, f"{path}.")
    return tuple(names)


def flat(record: Any) -> Any:
    """A decoded record with its nested records' fields also under dotted paths (``instrument.symbol``), so a
    stage's ``fields`` can name them; anything but a mapping with nested mappings comes back as it is."""
    if not isinstance(record, dict) or not any(isinstance(v, dict) for v in record.values()):
        return record
    out = dict(record)
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
    return out


# -- binding to a schema -------------------------------------------------------------------------------------


class Binder:
    """Compiles a checked template into one function per field, against an Avro record schema (or none: JSON)."""

    def __init__(self, schema: Mapping[str, Any] | None, described: str) -> None:
        self.described = described  # e.g. "schema id 7 of subject trades-value", for messages
        self.names: dict[str, Any] = {}  # the schema's named types (records, enums, fixed), by name and full name
        self.schema = schema
        if schema is not None:
            self._collect(schema, None)

    def bind(self, spec: Mapping[str, Any]) -> Render:
        if self.schema is None:
            return self._json(spec, "")
        return self._record(spec, self.schema, "")

    def _fail(self, path: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(SETTING, path, f"{problem} ({self.described})", fix)

    # JSON: natural types
    def _json(self, spec: Any, path: str) -> Render:
        if isinstance(spec, dict):
            if _mapping(spec):
                return self._mapped(spec, lambda value, where: None, path)
            parts = {key: self._json(value, f"{path}.{key}" if path else key) for key, value in spec.items()}
            return lambda t: {key: render(t) for key, render in parts.items()}
        if isinstance(spec, list):
            items = [self._json(item, f"{path}[{i}]") for i, item in enumerate(spec)]
            return lambda t: [render(t) for render in items]
        if isinstance(spec, str):
            lone = self._lone(spec)
            if lone is not None:
                kind, get = PLACEHOLDERS[lone]
                return (lambda t: str(get(t))) if kind == "decimal" else get
            return self._formatted(spec)
        return lambda _: spec

    # Avro: by the field's type
    def _record(self, spec: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> Render:
        fields = {f["name"]: f for f in schema.get("fields", [])}
        unknown = [key for key in spec if key not in fields]
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self._fail(where, "the schema has no such field", f"fields there: {', '.join(fields) or 'none'}")
        parts: dict[str, Render] = {}
        for name, field in fields.items():
            where = f"{path}.{name}" if path else name
            if name in spec:
                parts[name] = self._value(spec[name], field["type"], where)
            elif "default" not in field and not _nullable(field["type"]):
                raise self._fail(
                    where, "the template leaves out a field the schema requires (no default, not nullable)",
                    f"map it in [{SETTING}], e.g. {name} = \"{{symbol}}\" or a constant",
                )  # fmt: skip
        return lambda t: {name: render(t) for name, render in parts.items()}

    def _value(self, spec: Any, avro: Any, path: str) -> Render:
        branches = avro if isinstance(avro, list) else [avro]
        resolved = [self._resolve(b) for b in branches if b != "null"]
        if isinstance(spec, dict) and not _mapping(spec):
            for branch in resolved:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    return self._record(spec, branch, path)
            raise self._fail(path, "a nested table where the schema has no record", "map a value, not a table")
        if isinstance(spec, list):
            for branch in resolved:
                if isinstance(branch, dict) and branch.get("type") == "array":
                    items = [self._value(item, branch["items"], f"{path}[{i}]") for i, item in enumerate(spec)]
                    return lambda t: [render(t) for render in items]
            raise self._fail(path, "a list where the schema has no array", "map a single value")
        if isinstance(spec, dict):
            return self._mapped(spec, lambda value, where: self._constant(value, resolved, where), path)
        if not isinstance(spec, str) or all(name is None for _, name in _fields(spec)):
            return self._constant(spec, resolved, path)
        lone = self._lone(spec)
        if lone is None:
            if not any(_kind(b) in ("string", "enum") for b in resolved):
                raise self._fail(path, f"text {spec!r} for a field of type {_shown(avro)}", "use one placeholder alone")
            return self._formatted(spec)
        for branch in resolved:
            if _kind(branch) == "enum" and lone == "side" and not {"BUY", "SELL"} <= set(branch["symbols"]):
                raise self._fail(
                    path, f"{{side}} is BUY or SELL, not symbols of enum {branch.get('name')}",
                    'map it: {from = "side", map = {BUY = ..., SELL = ...}}',
                )  # fmt: skip
            render = _converter(lone, branch)
            if render is not None:
                return render
        kind = PLACEHOLDERS[lone][0]
        raise self._fail(path, f"{{{lone}}} (a {kind}) cannot go into a field of type {_shown(avro)}", _hint(lone))

    def _constant(self, value: Any, resolved: list[Any], path: str) -> Render:
        for branch in resolved:
            if _kind(branch) == "enum" and isinstance(value, str) and value not in branch["symbols"]:
                enum, symbols = branch.get("name"), ", ".join(branch["symbols"])
                raise self._fail(path, f"{value!r} is not a symbol of enum {enum}", f"use one of {symbols}")
        return lambda _: value

    def _mapped(self, spec: Mapping[str, Any], check: Callable[[Any, str], object], path: str) -> Render:
        """``{from, map}``: the placeholder's value (as text) looked up in the map; each output ``check``ed."""
        _, get = PLACEHOLDERS[spec["from"]]
        table = dict(spec["map"])
        for key, value in table.items():
            check(value, f"{path}.map.{key}")
        return lambda t: table[_text(get(t))]

    def _formatted(self, text: str) -> Render:
        parts = [(literal, PLACEHOLDERS[name][1] if name else None) for literal, name in _fields(text)]
        return lambda t: "".join(literal + (_text(get(t)) if get else "") for literal, get in parts)

    @staticmethod
    def _lone(text: str) -> str | None:
        parts = _fields(text)
        return parts[0][1] if len(parts) == 1 and parts[0][0] == "" else None

    def _collect(self, avro: Any, namespace: str | None) -> None:
        """Remember every named type defined anywhere in ``avro`` (a reference may come before the field the
        template maps)."""
        if isinstance(avro, list):
            for branch in avro:
                self._collect(branch, namespace)
            return
        if not isinstance(avro, dict):
            return
        kind, name = avro.get("type"), avro.get("name")
        if kind in ("record", "enum", "fixed") and isinstance(name, str):
            namespace = avro.get("namespace", namespace)
            self.names[name] = avro
            if namespace and "." not in name:
                self.names[f"{namespace}.{name}"] = avro
        for field in avro.get("fields", []) if kind == "record" else []:
            self._collect(field.get("type"), namespace)
        for key in ("items", "values"):
            if key in avro:
                self._collect(avro[key], namespace)
        if isinstance(kind, dict | list):
            self._collect(kind, namespace)

    def _resolve(self, avro: Any) -> Any:
        """A type with a named reference resolved to its definition; ``{"type": T}`` with no more to ``T``."""
        if isinstance(avro, str):
            return self.names.get(avro, avro)
        if isinstance(avro, dict) and isinstance(avro.get("type"), dict | list | str) and len(avro) == 1:
            return self._resolve(avro["type"])
        return avro


def _nullable(avro: Any) -> bool:
    return isinstance(avro, list) and "null" in avro


def _kind(avro: Any) -> str:
    """``string``, ``long``, ``decimal``, ``timestamp-millis``, ``enum``...: a type by what it holds."""
    if isinstance(avro, str):
        return avro
    if isinstance(avro, dict):
        return str(avro.get("logicalType") or avro.get("type"))
    return "union"


def _shown(avro: Any) -> str:
    if isinstance(avro, list):
        return " | ".join(_shown(b) for b in avro)
    return _kind(avro)


def _hint(placeholder: str) -> str:
    kind = PLACEHOLDERS[placeholder][0]
    return {
        "decimal": "a decimal goes into a decimal, string or double field",
        "time": "a time goes into a long (epoch ms), a timestamp or a string field",
        "integer": "an integer goes into a long, int or string field",
        "boolean": 'a boolean goes into a boolean or string field, or map it: {from = "maker", map = {...}}',
    }.get(kind, "text goes into a string or enum field")


def _converter(placeholder: str, avro: Any) -> Render | None:
    """How a placeholder alone fills a field of type ``avro`` (one branch), None when it cannot."""
    kind, get = PLACEHOLDERS[placeholder]
    target = _kind(avro)
    if target == "string" or (target == "uuid" and placeholder == "uuid"):
        return lambda t: _text(get(t))
    if target == "enum":
        return get if kind == "text" else None
    if kind == "integer" and target in ("long", "int"):
        return get
    if kind == "time":
        if target in ("long", "int"):
            return get
        if target in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"):
            return lambda t: EPOCH + dt.timedelta(milliseconds=get(t))
        if target in ("double", "float"):
            return lambda t: float(get(t))
        return None
    if kind == "decimal":
        if target == "decimal":
            return get
        return (lambda t: float(get(t))) if target in ("double", "float") else None
    if kind == "boolean":
        return get if target == "boolean" else None
    return None
