"""A client for the Confluent Schema Registry REST API: the few calls pipeline-check needs.

httpx (already a dependency) rather than confluent-kafka's client: the project speaks Kafka through aiokafka, so
confluent-kafka would bring librdkafka for four HTTP calls, and its errors would not name the setting to fix.
Every HTTP or connection failure becomes one :class:`RegistryError` naming the registry URL, the subject (or
schema id) and what the registry said, with Confluent's ``error_code``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from pipeline_check.core.errors import ConfigError, EndpointError

T = TypeVar("T")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INCOMPATIBLE = 409
INVALID_SCHEMA = 42201

_FIXES = {
    SUBJECT_NOT_FOUND: "register the schema first, or set the subject the producer uses (default <topic>-value)",
    VERSION_NOT_FOUND: "ask for a version the subject has",
    SCHEMA_NOT_FOUND: "the id is not in this registry: check the registry URL the producer uses",
    INCOMPATIBLE: "evolve the schema compatibly (e.g. give new fields a default) or change the subject's compatibility",
    INVALID_SCHEMA: "fix the schema",
    401: "check the registry credentials (basic auth user and password, or bearer token)",
    403: "the credentials lack permission on this subject",
}


def subject_for(topic: str, subject: str | None = None) -> str:
    """The subject of a topic's values: ``subject`` when configured, else ``<topic>-value`` (TopicNameStrategy)."""
    return subject or f"{topic}-value"


def _shown(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


class RegistryError(EndpointError):
    """A registry call failed; ``status`` and ``error_code`` are None when the registry did not answer."""

    def __init__(
        self,
        url: str,
        what: str,
        problem: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        setting: str = "schema_registry.url",
    ) -> None:
        self.status = status
        self.error_code = error_code
        fix = _FIXES.get(error_code or 0) or _FIXES.get(status or 0) or "check the registry URL and that it runs"
        super().__init__(setting, _shown(url), f"{what}: {problem}", fix)


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject."""

    subject: str
    version: int
    id: int
    schema: str


class SchemaRegistryClient:
    """Synchronous: it is called once per schema (ids are cached by the codec), never per record."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        setting: str = "schema_registry.url",
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(setting, url, "not an http(s) URL", "e.g. http://127.0.0.1:8081")
        if (username is None) != (password is None):
            raise ConfigError(
                setting, _shown(url), "basic auth needs both a user and a password", "set both or neither"
            )
        if token is not None and username is not None:
            raise ConfigError(setting, _shown(url), "both basic auth and a bearer token are set", "set one of them")
        self.url = url.rstrip("/")
        self.setting = setting
        sent = {"Accept": f"{CONTENT_TYPE}, application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        auth = httpx.BasicAuth(username, password) if username is not None and password is not None else None
        self._http = httpx.Client(base_url=self.url, headers=sent, auth=auth, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register ``schema`` under ``subject``; its id (the same id for the same schema)."""
        body = self._call("POST", f"/subjects/{quote(subject, safe='')}/versions", f"subject {subject!r}", schema)
        return self._field(body, "id", int, f"subject {subject!r}")

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text registered under ``schema_id`` (error_code 40403 when there is none)."""
        what = f"schema id {schema_id}"
        return self._field(self._call("GET", f"/schemas/ids/{schema_id}", what), "schema", str, what)

    def latest(self, subject: str) -> RegisteredSchema:
        """The subject's latest version."""
        what = f"subject {subject!r}"
        body = self._call("GET", f"/subjects/{quote(subject, safe='')}/versions/latest", what)
        return RegisteredSchema(
            subject=subject,
            version=self._field(body, "version", int, what),
            id=self._field(body, "id", int, what),
            schema=self._field(body, "schema", str, what),
        )

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        schema: str | Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        content = None
        if schema is not None:
            text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
            content = json.dumps({"schema": text})
        try:
            response = self._http.request(
                method, path, content=content, params=params, headers={"Content-Type": CONTENT_TYPE}
            )
        except httpx.HTTPError as exc:
            raise self._error(what, f"the registry does not answer ({type(exc).__name__}: {exc})") from None
        if response.is_success:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise self._error(what, f"answer is not a JSON object: {response.text[:200]!r}", response.status_code)
            return body
        code, message = _confluent_error(response)
        problem = f"the registry answered HTTP {response.status_code}"
        problem += f" (error_code {code}): {message}" if code is not None else f": {message}"
        raise self._error(what, problem, response.status_code, code)

    def _field(self, body: Mapping[str, Any], name: str, kind: type[T], what: str) -> T:
        value = body.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._error(what, f"answer has no {kind.__name__} {name!r}: {json.dumps(body)[:200]}")
        return value

    def _error(self, what: str, problem: str, status: int | None = None, code: int | None = None) -> RegistryError:
        return RegistryError(self.url, what, problem, status=status, error_code=code, setting=self.setting)


def _confluent_error(response: httpx.Response) -> tuple[int | None, str]:
    """Confluent's ``{"error_code", "message"}``, or the start of whatever else came back (a proxy's page)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        code = body.get("error_code")
        return (code if isinstance(code, int) else None), str(body["message"]).rstrip(".")
    text = " ".join(response.text.split())[:200]
    return None, text or response.reason_phrase
