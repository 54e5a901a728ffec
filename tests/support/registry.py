"""The Schema Registry calls only the tests make: whether a schema may follow a subject's latest version,
asked of the registry stand-in (the system under test) to check its compatibility rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipeline_check.backends.kafka.codecs.schema_registry import SchemaRegistryClient


@dataclass(frozen=True, slots=True)
class Compatibility:
    """The registry's verdict on a schema against a subject's latest version."""

    is_compatible: bool
    messages: tuple[str, ...]


class RegistryAdmin(SchemaRegistryClient):
    """The product's client plus the compatibility check."""

    def check_compatibility(self, subject: str, schema: str | Mapping[str, Any]) -> Compatibility:
        """Whether ``schema`` may follow the subject's latest version under its compatibility level (error_code
        40401 when the subject has no version yet)."""
        what = f"subject {subject!r}"
        path = f"/compatibility/subjects/{quote(subject, safe='')}/versions/latest"
        body = self._call("POST", path, what, schema, params={"verbose": "true"})
        messages = body.get("messages") or []
        return Compatibility(
            is_compatible=self._field(body, "is_compatible", bool, what),
            messages=tuple(str(m) for m in messages) if isinstance(messages, list) else (str(messages),),
        )
