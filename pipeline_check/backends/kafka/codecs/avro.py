"""Avro in the Confluent wire format: a 0 magic byte, the 4-byte big-endian schema id, the Avro binary body.

The writer schema of a record is the one its frame names: the codec's own id needs no lookup, any other id is
fetched once through a :class:`SchemaLookup` (a Schema Registry client) and cached, and the record is resolved
to the codec's schema by Avro's schema resolution rules. With no lookup (a local ``.avsc`` and a configured id)
only the codec's own id decodes.

Decimals and times: a field of logical type ``decimal`` is written from a :class:`~decimal.Decimal` and read back
as one, so prices stay exact; timestamps are written from aware datetimes, so a ``timestamp-micros`` and a
``timestamp-millis`` field both get the right number. :func:`to_comparable` turns a decoded record into the
values the fidelity diff compares (Decimal stays Decimal, a timestamp becomes epoch milliseconds).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, UnknownType
from fastavro.types import Schema as ParsedSchema
from fastavro.validation import ValidationError, validate

from pipeline_check.backends.kafka.codecs.schema_registry import SCHEMA_NOT_FOUND, RegistryError
from pipeline_check.core.errors import ConfigError, PipelineCheckError

MAGIC = 0
HEADER = struct.Struct(">bI")  # magic byte, schema id
MAX_SCHEMA_ID = 2**31 - 1  # Confluent's serializers read the id as a signed Java int
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)

# what fastavro raises on a body its schema cannot read: short input, bad UTF-8 (a ValueError), an enum or union
# index out of range, a timestamp outside datetime's range
_BODY_ERRORS = (EOFError, ValueError, IndexError, OverflowError, SchemaResolutionError)
# what fastavro raises on a schema it cannot parse (json.JSONDecodeError is a ValueError)
_SCHEMA_ERRORS = (SchemaParseException, UnknownType, ValueError, TypeError, KeyError)


class CodecError(PipelineCheckError):
    """A record cannot be encoded or decoded."""


class WireFormatError(CodecError):
    """The bytes are not a Confluent frame (wrong magic byte, too short)."""


class UnknownSchemaError(CodecError):
    """The frame names a schema id neither the codec nor its registry knows."""


class DecodeError(CodecError):
    """The body does not match the writer schema its frame names."""


class EncodeError(CodecError):
    """A record does not fit the codec's schema."""


class SchemaLookup(Protocol):
    """Where writer schemas come from by id: a Schema Registry client (``SchemaRegistryClient``) or a fake.

    Raises :class:`~pipeline_check.backends.kafka.codecs.schema_registry.RegistryError`, with ``error_code``
    40403 for an unknown id.
    """

    def schema_by_id(self, schema_id: int) -> str: ...


@dataclass(frozen=True, slots=True)
class _Decimal:
    """A top-level decimal field: its name and bounds (fastavro checks only the digits a value carries, so
    ``Decimal("1E+10")`` would pass it for ``decimal(18, 8)``)."""

    name: str
    precision: int
    scale: int
    limit: Decimal  # 10 ** (precision - scale): the first value that needs one digit too many

    def problem(self, value: object) -> str | None:
        if not isinstance(value, Decimal) or not value.is_finite():
            return None  # a None of a nullable union, or a type error fastavro names
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -self.scale:
            return f"{value} has more than {self.scale} decimals"
        if abs(value) >= self.limit:
            return f"{value} needs more than {self.precision} digits at scale {self.scale}"
        return None


def load_schema(path: str | Path, setting: str = "avro.schema") -> dict[str, Any]:
    """The Avro schema in an ``.avsc`` file, checked; a missing or invalid file is a one-line ConfigError."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            setting, str(path), f"cannot read the schema file ({exc.strerror or exc})", "fix the path"
        ) from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            setting, str(path), f"not JSON: {exc}", "an .avsc file holds one Avro schema as JSON"
        ) from None
    _parse(schema, setting, str(path))
    return cast(dict[str, Any], schema)


def _parse(schema: object, setting: str, shown: object) -> dict[str, Any]:
    """fastavro's parsed form of a record schema, or a ConfigError naming ``setting``."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ConfigError(setting, shown, "not an Avro record schema", 'the top level must be {"type": "record", ...}')
    try:
        parsed = parse_schema(schema)
    except _SCHEMA_ERRORS as exc:
        raise ConfigError(setting, shown, f"invalid Avro schema: {exc}", "fix the schema") from None
    return cast(dict[str, Any], parsed)  # a record schema parses to a dict


class AvroCodec:
    """Encodes records with one schema and id; decodes any frame whose writer schema it can find."""

    def __init__(
        self,
        schema: str | Mapping[str, Any],
        schema_id: int,
        registry: SchemaLookup | None = None,
        *,
        setting: str = "avro.schema",
    ) -> None:
        try:
            raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
        except json.JSONDecodeError as exc:
            raise ConfigError(setting, schema, f"not JSON: {exc}", "give the Avro schema as JSON") from None
        if isinstance(schema_id, bool) or not isinstance(schema_id, int) or not 0 <= schema_id <= MAX_SCHEMA_ID:
            raise ConfigError(
                f"{setting}_id", schema_id, f"not a schema id (0..{MAX_SCHEMA_ID})", "use the id the registry gave"
            )
        self.schema: dict[str, Any] = raw
        self.schema_id = schema_id
        self.registry = registry
        self._parsed = _parse(raw, setting, raw.get("name", "<schema>"))
        self._writers: dict[int, ParsedSchema] = {schema_id: self._parsed}
        self._header = HEADER.pack(MAGIC, schema_id)
        self._decimals = tuple(_top_level_decimals(self._parsed))

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The Confluent frame of ``record``; an EncodeError names the field that does not fit.

        Every record is validated first: fastavro's writer alone coerces silently (1.5 into a long as 1, None
        into a boolean as false), and a canary must reach Kafka as it was made.
        """
        for field in self._decimals:
            problem = field.problem(record.get(field.name))
            if problem:
                raise EncodeError(f"field {field.name!r}: {problem} (decimal({field.precision}, {field.scale}))")
        data = dict(record)
        out = io.BytesIO()
        out.write(self._header)
        try:
            validate(data, self._parsed, raise_errors=True)
            schemaless_writer(out, self._parsed, data, strict_allow_default=True)
        except ValidationError as exc:
            raise EncodeError(self._misfit("; ".join(map(str, exc.errors)))) from None
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise EncodeError(self._misfit(str(exc))) from None
        return out.getvalue()

    def _misfit(self, why: str) -> str:
        return f"record does not fit schema id {self.schema_id}: {why}"

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, resolved to the codec's schema."""
        if len(data) < HEADER.size or data[0] != MAGIC:
            raise WireFormatError(_not_a_frame(data))
        _, schema_id = HEADER.unpack_from(data)
        writer = self._writer(schema_id)
        body = io.BytesIO(data)
        body.seek(HEADER.size)
        try:
            record = schemaless_reader(body, writer, None if writer is self._parsed else self._parsed)
        except _BODY_ERRORS as exc:
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DecodeError(f"body does not decode with writer schema id {schema_id}: {what}") from None
        left = len(data) - body.tell()
        if left:
            raise DecodeError(f"body does not match writer schema id {schema_id}: {left} bytes left after the record")
        return cast(dict[str, Any], record)  # read as (or resolved to) the codec's record schema

    def _writer(self, schema_id: int) -> ParsedSchema:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        if self.registry is None:
            raise UnknownSchemaError(
                f"schema id {schema_id} in the frame is unknown: no schema registry is configured and the local "
                f"schema has id {self.schema_id}; configure the registry, or set the id the producer writes"
            )
        try:
            text = self.registry.schema_by_id(schema_id)
        except RegistryError as exc:
            if exc.error_code != SCHEMA_NOT_FOUND:
                raise
            raise UnknownSchemaError(f"schema id {schema_id} in the frame is unknown to the registry: {exc}") from None
        try:
            writer = parse_schema(json.loads(text))
        except _SCHEMA_ERRORS as exc:
            raise DecodeError(
                f"writer schema id {schema_id} from the registry is not a valid Avro schema: {exc}"
            ) from None
        self._writers[schema_id] = writer
        return writer


def _top_level_decimals(parsed: Mapping[str, Any]) -> Iterator[_Decimal]:
    """The record's own decimal fields, plain or in a union (decimals nested deeper get fastavro's check only)."""
    for field in parsed["fields"]:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for kind in kinds:
            if isinstance(kind, dict) and kind.get("logicalType") == "decimal" and "precision" in kind:
                precision, scale = int(kind["precision"]), int(kind.get("scale", 0))
                yield _Decimal(field["name"], precision, scale, Decimal(10) ** (precision - scale))


def _not_a_frame(data: bytes) -> str:
    if len(data) < HEADER.size:
        return f"{len(data)} bytes is too short for a Confluent frame (magic byte and 4-byte schema id)"
    first = data[:1]
    hint = " (JSON?)" if first in (b"{", b"[") else ""
    return (
        f"first byte {first!r}{hint} is not the Confluent magic byte 0: the record is not Confluent-framed Avro; "
        "set the stage's format to what the topic holds"
    )


def trade_record(trade: Mapping[str, Any]) -> dict[str, Any]:
    """A Binance trade (``Trade.to_dict()`` or its JSON) as a ``trade.avsc`` record: the price and quantity texts
    as exact Decimals, the epoch-ms times as UTC datetimes."""
    return {
        **trade,
        "E": EPOCH + dt.timedelta(milliseconds=trade["E"]),
        "T": EPOCH + dt.timedelta(milliseconds=trade["T"]),
        "p": Decimal(trade["p"]),
        "q": Decimal(trade["q"]),
    }


def to_comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    """Decoded Avro values as the fidelity diff compares them: Decimal stays Decimal (decimal-exact), a datetime
    becomes epoch milliseconds (an int, or an exact Decimal when it has a sub-millisecond part, so it is never
    rounded into a match), a UUID its text, an enum stays its symbol; nested records, arrays and maps likewise."""
    return {name: _comparable(value) for name, value in record.items()}


def _comparable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        ms, rest = divmod(aware - EPOCH, _MS)
        return ms if not rest else ms + Decimal(rest // dt.timedelta(microseconds=1)) / 1000
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value
