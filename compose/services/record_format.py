"""The raw topic's record format: Binance JSON frames as received (default) or Avro in the Confluent wire format.

RECORD_FORMAT=json|avro. With avro:
  SCHEMA_REGISTRY_URL  the Schema Registry (required)
  SCHEMA_FILE          the record schema (default: compose/schemas/trade.avsc)
  SCHEMA_SUBJECT       the subject it is registered under (default: <RAW_TOPIC>-value, TopicNameStrategy)

The ingestor registers the schema under the subject at start and encodes every frame with the id it got; the
consumer reads a record with the writer schema its id names (fetched once per id) resolved to its own schema.
A Confluent frame is a 0 magic byte, the schema id as 4 bytes big-endian, then the Avro binary body.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.types import Schema
from fastavro.validation import ValidationError, validate

from .common import ServiceError, env_choice, env_str, fail
from .trades import InvalidRecord, Trade, parse_event, parse_trade

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "trade.avsc"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
HEADER = struct.Struct(">bI")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
REGISTER_TIMEOUT_S = 30.0


class RecordError(ValueError):
    """A record that cannot be encoded or decoded; ``str(exc)`` is the reason."""


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """RECORD_FORMAT and, for avro, where the schema is and where it is registered."""

    kind: str  # json | avro
    registry_url: str | None = None
    schema_file: Path = DEFAULT_SCHEMA
    subject: str | None = None

    @classmethod
    def from_env(cls, raw_topic: str, env: Mapping[str, str] | None = None) -> RecordFormat:
        kind = env_choice("RECORD_FORMAT", "json", ("json", "avro"), env)
        if kind == "json":
            return cls(kind)
        url = env_str("SCHEMA_REGISTRY_URL", env=env)
        if not url.startswith(("http://", "https://")):
            fail("SCHEMA_REGISTRY_URL", url, "must be an http(s):// URL, e.g. http://127.0.0.1:18085")
        schema_file = Path(env_str("SCHEMA_FILE", str(DEFAULT_SCHEMA), env))
        if not schema_file.is_file():
            fail("SCHEMA_FILE", str(schema_file), "no such file; point it at an .avsc record schema")
        return cls(kind, url.rstrip("/"), schema_file, env_str("SCHEMA_SUBJECT", f"{raw_topic}-value", env))

    @property
    def avro(self) -> bool:
        return self.kind == "avro"


class Registry:
    """The two Schema Registry calls the services make (urllib: no HTTP client dependency for two calls)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"SCHEMA_REGISTRY_URL={self.url}: {method} {path} answered HTTP {exc.code}: "
                               f"{exc.read()[:200].decode(errors='replace')}") from None  # fmt: skip
        except (OSError, ValueError) as exc:
            raise ServiceError(f"SCHEMA_REGISTRY_URL={self.url}: {method} {path} failed: {exc}") from None
        if not isinstance(answer, dict):
            raise ServiceError(f"SCHEMA_REGISTRY_URL={self.url}: {method} {path} answered {answer!r}")
        return answer

    def register(self, subject: str, schema: str) -> int:
        """The schema's id under ``subject``; retried while the registry does not answer (it may be starting)."""
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while True:
            try:
                answer = self._call("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": schema})
                return int(answer["id"])
            except ServiceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def schema(self, schema_id: int) -> str:
        return str(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])


def _frame(schema_id: int, schema: Schema, record: Mapping[str, Any]) -> bytes:
    # validated first: the writer alone coerces silently (None into a boolean as false)
    validate(dict(record), schema, raise_errors=True)
    out = io.BytesIO()
    out.write(HEADER.pack(0, schema_id))
    schemaless_writer(out, schema, dict(record))
    return out.getvalue()


class AvroEncoder:
    """Binance JSON frames -> Confluent-framed Avro records of the registered schema."""

    def __init__(self, fmt: RecordFormat) -> None:
        assert fmt.registry_url is not None and fmt.subject is not None
        text = fmt.schema_file.read_text()
        self.schema = parse_schema(json.loads(text))
        self.schema_id = Registry(fmt.registry_url).register(fmt.subject, json.dumps(json.loads(text)))
        log.info("Avro: schema %s registered under %s as id %d", fmt.schema_file.name, fmt.subject, self.schema_id)

    def encode(self, frame: bytes) -> bytes:
        """The frame as an Avro record; RecordError when it is not a trade the schema holds."""
        try:
            event = json.loads(frame)
            record = {
                **event,
                "E": EPOCH + dt.timedelta(milliseconds=event["E"]),
                "T": EPOCH + dt.timedelta(milliseconds=event["T"]),
                "p": Decimal(event["p"]),
                "q": Decimal(event["q"]),
            }
            return _frame(self.schema_id, self.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, ValidationError) as exc:
            raise RecordError(f"frame does not fit the Avro schema: {type(exc).__name__}: {exc}") from None


class AvroDecoder:
    """Confluent-framed Avro records -> Binance-style events (decimals as text, times as epoch ms)."""

    def __init__(self, fmt: RecordFormat) -> None:
        assert fmt.registry_url is not None
        self.reader = parse_schema(json.loads(fmt.schema_file.read_text()))
        self.registry = Registry(fmt.registry_url)
        self._writers: dict[int, Schema] = {}

    def decode(self, value: bytes) -> dict[str, Any]:
        """The event in ``value``; RecordError when it is not a Confluent Avro frame of a known schema. A registry
        that does not answer raises ServiceError: the record is fine, the service cannot read it yet."""
        if len(value) < HEADER.size or value[0] != 0:
            raise RecordError("value is not Confluent-framed Avro (no magic byte 0 and schema id)")
        _, schema_id = HEADER.unpack_from(value)
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = parse_schema(json.loads(self.registry.schema(schema_id)))
        body = io.BytesIO(value)
        body.seek(HEADER.size)
        try:
            record = schemaless_reader(body, writer, self.reader)
        except (EOFError, ValueError, IndexError, OverflowError) as exc:
            raise RecordError(f"Avro body does not decode with schema id {schema_id}: {exc}") from None
        if not isinstance(record, dict):
            raise RecordError(f"schema id {schema_id} holds no record")
        return {name: _plain(value) for name, value in record.items()}


def _plain(value: Any) -> Any:
    """Decimals as fixed-point text, datetimes as epoch ms (a sub-millisecond part stays a fraction, which the
    event check refuses)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        ms, rest = divmod(value - EPOCH, _MS)
        return ms if not rest else ms + rest / _MS
    return value


def trade_parser(fmt: RecordFormat) -> Callable[[bytes | None], Trade]:
    """How the consumer reads a raw record into a trade: JSON, or Avro decoded and then checked the same way."""
    if not fmt.avro:
        return parse_trade
    decoder = AvroDecoder(fmt)

    def parse(value: bytes | None) -> Trade:
        if value is None:
            raise InvalidRecord("empty value (tombstone)")
        try:
            event = decoder.decode(value)
        except RecordError as exc:
            raise InvalidRecord(str(exc)) from None
        return parse_event(event)

    return parse
