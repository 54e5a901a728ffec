"""The record format a Kafka plugin reads or writes (``format``, ``registry_url``, ``subject``, ``schema``,
``schema_id``), and the codec those settings make.

``format = "json"`` (default): records are JSON text. ``format = "avro"``: records are Avro in the Confluent wire
format. The writer (the Kafka injector) registers ``schema`` (a local ``.avsc``) under ``subject`` (default
``<topic>-value``) and writes the id it gets, or writes with the subject's latest version when no ``schema`` is
given, or, with no registry, writes ``schema`` with the fixed ``schema_id``. The reader (the Kafka probe) reads each
record with the writer schema its id names, fetched from the registry once per id, resolved to the subject's
latest version (or to version ``schema_id``); with no registry, only ``schema_id`` frames decode, with ``schema``.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field, SecretStr, model_validator

from pipeline_check.backends.kafka.codecs.avro import AvroCodec, load_schema
from pipeline_check.backends.kafka.codecs.schema_registry import SchemaRegistryClient, subject_for
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.plugins import PluginSettings

AVRO_ONLY = ("registry_url", "registry_headers", "subject", "schema_file", "schema_id")
T = TypeVar("T")


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s):// URL, e.g. http://127.0.0.1:8081")
    return value


class FormatSettings(PluginSettings):
    """Settings of a plugin that reads or writes a topic's records."""

    format: Literal["json", "avro"] = "json"
    registry_url: Annotated[str, AfterValidator(_http_url)] | None = None
    registry_headers: dict[str, SecretStr] = Field(default_factory=dict)  # e.g. an API key; masked in reports
    subject: str | None = Field(default=None, min_length=1)
    schema_file: str | None = Field(default=None, alias="schema", min_length=1)  # a local .avsc
    schema_id: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _consistent(self) -> FormatSettings:
        if self.format == "json":
            given = [name for name in AVRO_ONLY if name in self.model_fields_set]
            if given:
                names = ", ".join("schema" if n == "schema_file" else n for n in given)
                raise ValueError(f"{names} only apply with format = 'avro'")
        elif self.registry_url is None and (self.schema_file is None or self.schema_id is None):
            raise ValueError("format = 'avro' needs registry_url, or schema (an .avsc) and schema_id without one")
        return self


def _required(value: T | None, where: str, name: str) -> T:
    """A setting the validator demands in this combination (settings built without validation get an error)."""
    if value is None:
        raise ConfigError(f"{where}.{name}", None, "is required with format = 'avro' here", f"set {name}")
    return value


def _registry(settings: FormatSettings, where: str) -> SchemaRegistryClient | None:
    if settings.registry_url is None:
        return None
    headers = {name: value.get_secret_value() for name, value in settings.registry_headers.items()}
    return SchemaRegistryClient(settings.registry_url, headers=headers, setting=f"{where}.registry_url")


def writer_codec(settings: FormatSettings, topic: str, where: str) -> AvroCodec | None:
    """The codec records are written with (None for JSON); registers the schema when there is a registry.
    Blocking (HTTP): call it from a worker thread."""
    if settings.format == "json":
        return None
    registry = _registry(settings, where)
    subject = subject_for(topic, settings.subject)
    if settings.schema_file is None:
        registry = _required(registry, where, "registry_url")
        latest = registry.latest(subject)
        return AvroCodec(latest.schema, latest.id, registry, setting=f"{where}.subject")
    schema = load_schema(settings.schema_file, f"{where}.schema")
    if registry is None:
        return AvroCodec(schema, _required(settings.schema_id, where, "schema_id"), setting=f"{where}.schema")
    return AvroCodec(schema, registry.register(subject, schema), registry, setting=f"{where}.schema")


def reader_codec(settings: FormatSettings, topic: str, where: str) -> AvroCodec | None:
    """The codec records are read with (None for JSON). Blocking (HTTP): call it from a worker thread."""
    if settings.format == "json":
        return None
    registry = _registry(settings, where)
    if registry is None:
        schema_file = _required(settings.schema_file, where, "schema")
        return AvroCodec(load_schema(schema_file, f"{where}.schema"), _required(settings.schema_id, where, "schema_id"))
    if settings.schema_id is not None:
        text = registry.schema_by_id(settings.schema_id)
        return AvroCodec(text, settings.schema_id, registry, setting=f"{where}.schema_id")
    latest = registry.latest(subject_for(topic, settings.subject))
    return AvroCodec(latest.schema, latest.id, registry, setting=f"{where}.subject")


def close_codec(codec: AvroCodec | None) -> None:
    """Release the codec's registry client (its connection pool)."""
    if codec is not None and isinstance(codec.registry, SchemaRegistryClient):
        codec.registry.close()
