"""Record codecs: Avro in the Confluent wire format and the Schema Registry client it looks schemas up with."""

from __future__ import annotations

from pipeline_check.backends.kafka.codecs.avro import (
    AvroCodec,
    CodecError,
    DecodeError,
    EncodeError,
    SchemaLookup,
    UnknownSchemaError,
    WireFormatError,
    load_schema,
    to_comparable,
    trade_record,
)
from pipeline_check.backends.kafka.codecs.schema_registry import (
    RegisteredSchema,
    RegistryError,
    SchemaRegistryClient,
    subject_for,
)

__all__ = [
    "AvroCodec",
    "CodecError",
    "DecodeError",
    "EncodeError",
    "RegisteredSchema",
    "RegistryError",
    "SchemaLookup",
    "SchemaRegistryClient",
    "UnknownSchemaError",
    "WireFormatError",
    "load_schema",
    "subject_for",
    "to_comparable",
    "trade_record",
]
