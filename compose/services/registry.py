"""Schema registry STAND-IN: a local stand-in for the Confluent Schema Registry, not Confluent software.

It serves the Confluent-compatible subset of the REST API that the reference pipeline and pipeline-check use
(Avro schemas only; no deletes, no references, no per-subject config):

    GET  /subjects                              GET  /schemas/ids/{id}
    POST /subjects/{subject}/versions           GET  /subjects/{subject}/versions
    GET  /subjects/{subject}/versions/{version|latest}
    POST /compatibility/subjects/{subject}/versions/latest     GET/PUT /config

Answers carry ``application/vnd.schemaregistry.v1+json`` and errors Confluent's ``{"error_code", "message"}``.
Ids are global: the same schema (compared as JSON, whitespace and key order aside) always gets the same id, under
any subject. Compatibility levels are Confluent's seven; a check resolves the schemas with Apache Avro's reference
checker (``avro.compatibility``, the port of Java's ``SchemaCompatibility``), so BACKWARD means the new schema
can read what the latest version wrote. State is kept in memory and, with ``REGISTRY_STATE_FILE``, in a JSON file
rewritten on every change, so a restart keeps ids, versions and the compatibility level.

Environment: ``REGISTRY_PORT`` (required), ``REGISTRY_HOST`` (127.0.0.1), ``REGISTRY_STATE_FILE`` (none),
``REGISTRY_COMPATIBILITY`` (BACKWARD: the level of a fresh registry), ``REGISTRY_BASIC_AUTH`` (``user:password``)
or ``REGISTRY_BEARER_TOKEN``: when one is set, every call but ``/`` and ``/health`` needs it.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.errors import AvroException
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .common import (
    ConfigError,
    HttpTask,
    ServiceError,
    Shutdown,
    env_port,
    env_str,
    load_config,
    run_main,
    setup_logging,
)

log = logging.getLogger("registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
MAX_VERSION = 2**31 - 1
PUBLIC_PATHS = {"/", "/health"}


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    host: str
    port: int
    state_file: Path | None
    compatibility: str
    authorization: str | None  # the exact Authorization header every call must carry

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RegistryConfig:
        level = env_str("REGISTRY_COMPATIBILITY", "BACKWARD", env).upper()
        if level not in LEVELS:
            raise ConfigError(f"REGISTRY_COMPATIBILITY={level!r} (env): must be one of {', '.join(LEVELS)}")
        basic = env_str("REGISTRY_BASIC_AUTH", "", env)
        token = env_str("REGISTRY_BEARER_TOKEN", "", env)
        if basic and token:
            raise ConfigError("REGISTRY_BEARER_TOKEN=<set> (env): REGISTRY_BASIC_AUTH is set too; set one of them")
        if basic and ":" not in basic:
            raise ConfigError("REGISTRY_BASIC_AUTH=<set> (env): must be user:password")
        authorization = None
        if basic:
            authorization = "Basic " + base64.b64encode(basic.encode()).decode()
        elif token:
            authorization = f"Bearer {token}"
        state = env_str("REGISTRY_STATE_FILE", "", env)
        return cls(
            host=env_str("REGISTRY_HOST", "127.0.0.1", env),
            port=env_port("REGISTRY_PORT", env=env),
            state_file=Path(state) if state else None,
            compatibility=level,
            authorization=authorization,
        )


# ---------------------------------------------------------------------------- state


class RegistryError(Exception):
    """An answer in Confluent's error form."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def canonical(schema: str) -> tuple[str, avro.schema.Schema]:
    """The schema's identity (compact JSON, sorted keys) and its parsed form; 42201 when it is not Avro."""
    try:
        parsed = avro.schema.parse(schema)
    except (AvroException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RegistryError(422, 42201, f"Either the input schema or one of its references is invalid: {exc}") from None
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":")), parsed


def incompatibilities(level: str, new: avro.schema.Schema, versions: list[tuple[int, avro.schema.Schema]]) -> list[str]:
    """Why ``new`` may not follow ``versions`` (oldest first) under ``level``; empty when it may."""
    if level == "NONE" or not versions:
        return []
    against = versions if level.endswith("_TRANSITIVE") else versions[-1:]
    checks: list[tuple[str, bool]] = []  # (direction, new schema is the reader)
    if level.startswith(("BACKWARD", "FULL")):
        checks.append(("new schema cannot read data written with", True))
    if level.startswith(("FORWARD", "FULL")):
        checks.append(("data written with the new schema cannot be read with", False))
    problems = []
    for version, old in against:
        for direction, new_reads in checks:
            reader, writer = (new, old) if new_reads else (old, new)
            checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro ships it untyped
            result = checker.get_compatibility(reader, writer)
            if result.compatibility is SchemaCompatibilityType.incompatible:
                kinds = ", ".join(sorted(i.value.upper() for i in result.incompatibilities))
                where = ", ".join(sorted(result.locations))
                what = "; ".join(sorted(result.messages))
                problems.append(f"{kinds} at {where}: {what} ({direction} version {version}, {level})")
    return problems


class Registry:
    """Schemas by id (id = position + 1), each subject's versions as schema ids, the compatibility level."""

    def __init__(self, compatibility: str, state_file: Path | None = None) -> None:
        self.compatibility = compatibility
        self.state_file = state_file
        self.schemas: list[str] = []
        self.subjects: dict[str, list[int]] = {}
        self._ids: dict[str, int] = {}
        self._parsed: dict[int, avro.schema.Schema] = {}

    @classmethod
    def open(cls, compatibility: str, state_file: Path | None) -> Registry:
        """A fresh registry, or the one saved in ``state_file``; saved once, so a file that cannot be written
        stops the start instead of the first registration."""
        registry = cls(compatibility, state_file)
        if state_file is not None and state_file.exists():
            registry.load(state_file)
        try:
            registry.save()
        except RegistryError as exc:
            raise ServiceError(f"REGISTRY_STATE_FILE={state_file}: {exc.message}; pick a writable path") from None
        return registry

    def load(self, state_file: Path) -> None:
        """The schemas, subjects and level saved in ``state_file``."""
        try:
            saved = json.loads(state_file.read_text(encoding="utf-8"))
            for text in saved["schemas"]:
                self._add(*canonical(text))
            self.subjects = {str(s): [int(i) for i in ids] for s, ids in saved["subjects"].items()}
            if any(not 1 <= i <= len(self.schemas) for ids in self.subjects.values() for i in ids):
                raise ValueError("a subject names a schema id the file does not hold")
            self.compatibility = _level(saved["compatibility"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RegistryError) as exc:
            raise ServiceError(
                f"REGISTRY_STATE_FILE={state_file}: not a registry state file ({type(exc).__name__}: {exc}); "
                "move it away to start empty"
            ) from None

    def _add(self, key: str, parsed: avro.schema.Schema) -> int:
        self.schemas.append(key)
        schema_id = self._ids[key] = len(self.schemas)
        self._parsed[schema_id] = parsed
        return schema_id

    def save(self) -> None:
        """Rewrite the state file; Confluent's 50001 when it cannot (memory then holds more than the file)."""
        if self.state_file is None:
            return
        data = {"compatibility": self.compatibility, "schemas": self.schemas, "subjects": self.subjects}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.state_file)  # a crash leaves the old file or the new one, never half of one
        except OSError as exc:
            log.error("cannot write %s: %s", self.state_file, exc)
            raise RegistryError(
                500, 50001, f"Error in the backend data store: cannot write {self.state_file}"
            ) from None

    def versions(self, subject: str) -> list[int]:
        if subject not in self.subjects:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def version(self, subject: str, version: str) -> tuple[int, int]:
        """``(version, schema id)`` of ``latest``, ``-1`` (latest too) or a version number."""
        ids = self.versions(subject)
        if version in ("latest", "-1"):
            return len(ids), ids[-1]
        if not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
            raise RegistryError(
                422,
                42202,
                f"The specified version '{version}' is not a valid version id. "
                f'Allowed values are between [1, {MAX_VERSION}] and the string "latest"',
            )
        if int(version) > len(ids):
            raise RegistryError(404, 40402, f"Version {version} not found.")
        return int(version), ids[int(version) - 1]

    def schema(self, schema_id: int) -> str:
        if not 1 <= schema_id <= len(self.schemas):
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return self.schemas[schema_id - 1]

    def check(self, subject: str, schema: str) -> list[str]:
        """Why ``schema`` may not follow the subject's versions; 40401 when there is no such subject."""
        _, parsed = canonical(schema)
        ids = self.versions(subject)
        return incompatibilities(self.compatibility, parsed, [(v, self._parsed[i]) for v, i in enumerate(ids, 1)])

    def register(self, subject: str, schema: str) -> int:
        """The schema's id, after adding it as the subject's next version unless the subject already has it."""
        key, parsed = canonical(schema)
        ids = self.subjects.get(subject, [])
        known = self._ids.get(key)
        if known is not None and known in ids:
            return known
        problems = incompatibilities(self.compatibility, parsed, [(v, self._parsed[i]) for v, i in enumerate(ids, 1)])
        if problems:
            raise RegistryError(
                409,
                409,
                f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
                f"details: {problems}",
            )
        if known is None:
            known = self._add(key, parsed)
        self.subjects[subject] = [*ids, known]
        self.save()
        log.info("registered schema id %d as version %d of %s", known, len(ids) + 1, subject)
        return known

    def set_compatibility(self, level: object) -> str:
        self.compatibility = _level(level)
        self.save()
        return self.compatibility


def _level(level: object) -> str:
    """A compatibility level in Confluent's spelling; 42203 when it is none."""
    value = str(level).upper()
    if value not in LEVELS:
        raise RegistryError(
            422, 42203, f"Invalid compatibility level. Valid values are {', '.join(x.lower() for x in LEVELS)}"
        )
    return value


# ------------------------------------------------------------------------------ app


class RegistryResponse(JSONResponse):
    media_type = CONTENT_TYPE


def _error(status: int, error_code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": error_code, "message": message}, status_code=status)


async def _json(request: Request, key: str) -> dict[str, Any]:
    """The JSON object of the body, holding ``key``; Confluent's 422 when it is not."""
    try:
        data = json.loads(await request.body())
    except ValueError:
        raise RegistryError(422, 422, "Unrecognized request body: not JSON") from None
    if not isinstance(data, dict) or key not in data:
        raise RegistryError(422, 422, f"Unrecognized request body: expected a JSON object with {key!r}")
    return data


async def _schema(request: Request) -> str:
    """The Avro schema text of a register or compatibility request."""
    data = await _json(request, "schema")
    if data.get("schemaType", "AVRO") != "AVRO":
        raise RegistryError(
            422, 42201, f"schemaType {data['schemaType']} is not supported by this stand-in (AVRO only)"
        )
    if data.get("references"):
        raise RegistryError(422, 42201, "schema references are not supported by this stand-in")
    if not isinstance(data["schema"], str):
        raise RegistryError(422, 42201, "Either the input schema or one of its references is invalid: not a string")
    return data["schema"]


def create_app(cfg: RegistryConfig, registry: Registry) -> FastAPI:
    app = FastAPI(title="schema registry stand-in", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def authorize(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if cfg.authorization is None or request.url.path in PUBLIC_PATHS:
            return await call_next(request)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), cfg.authorization.encode()):
            return _error(401, 401, "Unauthorized")
        return await call_next(request)

    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> RegistryResponse:
        return _error(exc.status, exc.error_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> RegistryResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return _error(422, 422, f"Unprocessable request: {where}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> RegistryResponse:
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")

    @app.get("/")
    async def root() -> RegistryResponse:
        return RegistryResponse(
            {
                "service": "schema registry stand-in",
                "description": "a local stand-in implementing a Confluent-compatible subset of the Schema Registry "
                "REST API (Avro only); not Confluent Schema Registry",
                "compatibility": registry.compatibility,
            }
        )

    @app.get("/health")
    async def health() -> RegistryResponse:
        return RegistryResponse({"status": "ok", "subjects": len(registry.subjects), "schemas": len(registry.schemas)})

    @app.get("/subjects")
    async def subjects() -> RegistryResponse:
        return RegistryResponse(sorted(registry.subjects))

    @app.get("/subjects/{subject}/versions")
    async def versions(subject: str) -> RegistryResponse:
        return RegistryResponse(list(range(1, len(registry.versions(subject)) + 1)))

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> RegistryResponse:
        return RegistryResponse({"id": registry.register(subject, await _schema(request))})

    @app.get("/subjects/{subject}/versions/{version}")
    async def get_version(subject: str, version: str) -> RegistryResponse:
        number, schema_id = registry.version(subject, version)
        return RegistryResponse(
            {"subject": subject, "version": number, "id": schema_id, "schema": registry.schema(schema_id)}
        )

    @app.get("/schemas/ids/{schema_id}")
    async def by_id(schema_id: str) -> RegistryResponse:
        number = int(schema_id) if schema_id.isdigit() else 0
        if number == 0:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return RegistryResponse({"schema": registry.schema(number)})

    @app.post("/compatibility/subjects/{subject}/versions/latest")
    async def compatibility(subject: str, request: Request, verbose: bool = False) -> RegistryResponse:
        problems = registry.check(subject, await _schema(request))
        answer: dict[str, Any] = {"is_compatible": not problems}
        if verbose:
            answer["messages"] = problems
        return RegistryResponse(answer)

    @app.get("/config")
    async def get_config() -> RegistryResponse:
        return RegistryResponse({"compatibilityLevel": registry.compatibility})

    @app.put("/config")
    async def put_config(request: Request) -> RegistryResponse:
        level = (await _json(request, "compatibility"))["compatibility"]
        return RegistryResponse({"compatibility": registry.set_compatibility(level)})

    return app


async def main() -> int:
    setup_logging("registry")
    cfg = load_config(RegistryConfig.from_env)
    registry = Registry.open(cfg.compatibility, cfg.state_file)
    shutdown = Shutdown()
    shutdown.install()
    http = HttpTask(create_app(cfg, registry), cfg.host, cfg.port, "REGISTRY_PORT")
    await http.start()
    log.info(
        "schema registry stand-in on http://%s:%d (%d schemas, %d subjects, %s, state %s)",
        cfg.host,
        cfg.port,
        len(registry.schemas),
        len(registry.subjects),
        registry.compatibility,
        cfg.state_file or "in memory only",
    )
    await shutdown.wait()
    await http.stop()
    log.info("registry stopped")
    return 0


if __name__ == "__main__":
    run_main(main)
