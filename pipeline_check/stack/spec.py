"""stack.toml -> a typed, validated stack description with its placeholders filled in.

A stack file may extend another (``[stack] extends = "../stack.toml"``): the base is read first and the
file's tables are merged into it key by key (a service's ``env`` gains variables; lists and values are
replaced). A profile is such a file: ``--profile lakehouse`` is ``profiles/lakehouse.toml`` beside the
stack file. Services run from the folder of the base file, and ``run_dir`` is relative to the file that
sets it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline_check.core.errors import ConfigError, StackError

HealthKind = Literal["kafka", "http", "tcp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StackSection(_Strict):
    name: str
    run_dir: str = "../.stack"
    toxiproxy: str | None = None  # the API of the stack's Toxiproxy, whose proxies network faults act on
    extends: str | None = None  # consumed while reading; kept so a typo elsewhere still gets named


class _ProxyModel(_Strict):
    listen: str
    upstream: str


class _ServiceModel(_Strict):
    command: list[str] = Field(min_length=1)
    depends_on: list[str] = []
    health: dict[HealthKind, str] = Field(min_length=1, max_length=1)
    env: dict[str, str] = {}
    start_timeout: float = Field(default=30.0, gt=0)
    optional: bool = False
    prepare: str | None = None


class _StackModel(_Strict):
    stack: _StackSection
    ports: dict[str, int]
    env: dict[str, str] = {}
    exports: dict[str, str] = {}
    proxies: dict[str, _ProxyModel] = {}
    services: dict[str, _ServiceModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _dependencies_exist(self) -> _StackModel:
        for name, service in self.services.items():
            for dep in service.depends_on:
                if dep not in self.services:
                    raise ValueError(f"services.{name}.depends_on names unknown service {dep!r}")
        return self


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service, placeholders filled in."""

    name: str
    command: tuple[str, ...]
    depends_on: tuple[str, ...]
    health_kind: HealthKind
    health_target: str
    env: Mapping[str, str]
    start_timeout: float
    optional: bool
    prepare: str | None


@dataclass(frozen=True, slots=True)
class StackSpec:
    """The whole stack for one run folder and one set of ports."""

    name: str
    file: Path
    compose_dir: Path
    run_dir: Path
    ports: Mapping[str, int]
    services: Mapping[str, ServiceSpec]
    placeholders: Mapping[str, object]
    exports: Mapping[str, str]  # environment that points the validator's config at this stack
    # network links the stack's Toxiproxy carries: name -> (listen, upstream) address
    proxies: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    toxiproxy: str | None = None  # its API URL

    @property
    def kafka_libs(self) -> Path:
        return Path(str(self.placeholders["kafka_libs"]))

    def render(self, setting: str, text: str) -> str:
        """Fill ``{python}``, ``{compose_dir}``, ``{run_dir}``, ``{kafka_libs}``, ``{tools}``, ``{port.NAME}``."""
        return _render(self.placeholders, f"{self.file.name}:{setting}", text)

    def start_order(self, names: set[str] | None = None) -> list[str]:
        """Dependencies first, ties in file order; ``names`` plus what they depend on."""
        wanted = set(self.services) if names is None else self._closure(names)
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise StackError(f"{self.file}: services form a dependency cycle through {name!r}")
            visiting.add(name)
            for dep in self.services[name].depends_on:
                visit(dep)
            order.append(name)

        for name in self.services:
            if name in wanted:
                visit(name)
        return order

    def dependents(self, name: str) -> list[str]:
        """Services that depend on ``name``, directly or not, in start order."""
        return [s for s in self.start_order() if s != name and name in self._closure({s})]

    def _closure(self, names: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in self.services:
                raise StackError(f"service {name!r} is not in {self.file}; services: {', '.join(self.services)}")
            if name not in seen:
                seen.add(name)
                todo.extend(self.services[name].depends_on)
        return seen


def _render(placeholders: Mapping[str, object], setting: str, text: str) -> str:
    try:
        return text.format_map(placeholders)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise ConfigError(
            setting,
            text,
            f"has an unknown placeholder ({exc})",
            "use {python}, {compose_dir}, {run_dir}, {kafka_libs}, {tools} or {port.NAME}",
        ) from None


def default_stack_file() -> Path:
    """``$PIPELINE_CHECK_STACK_FILE`` or ``compose/stack.toml`` under the working directory."""
    return Path(os.environ.get("PIPELINE_CHECK_STACK_FILE", "compose/stack.toml"))


def profile_file(profile: str, stack_file: Path | None = None) -> Path:
    """The stack file of ``profile``: ``profiles/<profile>.toml`` beside ``stack_file`` (which it extends)."""
    folder = (stack_file or default_stack_file()).parent / "profiles"
    path = folder / f"{profile}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.toml"))
        raise ConfigError(
            "--profile",
            profile,
            f"no {path}",
            f"use one of {known}" if known else "profiles live in <stack dir>/profiles",
        )
    return path


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` merged in: tables key by key, anything else replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        below = merged.get(key)
        merged[key] = _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def _read(file: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Path]:
    """The raw data of ``file`` with the files it extends merged under it, and the base file's folder."""
    if file in chain:
        raise ConfigError(
            "stack.extends", str(file), "extends itself (through " + ", ".join(map(str, chain)) + ")", "break the cycle"
        )
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        setting = "stack.extends" if chain else "stack file"
        raise ConfigError(
            setting, str(file), "does not exist", "run from the project root or pass --stack-file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("stack file", str(file), f"is not valid TOML ({exc})", "fix the syntax") from None
    stack = raw.get("stack")
    if isinstance(stack, dict):
        if isinstance(stack.get("run_dir"), str):  # relative to the file that says it
            stack["run_dir"] = str(file.parent / stack["run_dir"])
        parent = stack.pop("extends", None)
        if isinstance(parent, str):
            base, compose_dir = _read((file.parent / parent).resolve(), (*chain, file))
            return _merge(base, raw), compose_dir
    return raw, file.parent


def load_stack(
    file: Path | None = None,
    *,
    run_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    kafka_libs: Path | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
) -> StackSpec:
    """Read and validate ``file``; ``run_dir``, ``ports`` and ``service_env`` (extra variables per
    service, e.g. to run a deliberately broken stack) override what it says."""
    file = (file or default_stack_file()).resolve()
    raw, compose_dir = _read(file)
    try:
        model = _StackModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{file.name}:{where}", first.get("input"), first["msg"], "see the comments in compose/stack.toml"
        ) from None

    resolved_ports = dict(model.ports)
    for name, port in (ports or {}).items():
        if name not in resolved_ports:
            raise ConfigError(
                f"port.{name}", port, "is not a port of this stack", f"use one of {sorted(resolved_ports)}"
            )
        resolved_ports[name] = port
    if run_dir is None:
        env_dir = os.environ.get("PIPELINE_CHECK_STACK_DIR")
        run_dir = Path(env_dir) if env_dir else compose_dir / model.stack.run_dir
    run_dir = run_dir.resolve()
    libs = kafka_libs or Path(os.environ.get("PIPELINE_CHECK_KAFKA_LIBS", compose_dir / "kafka" / "libs"))
    # tools `make setup` builds (Toxiproxy's server), beside the project's .venv
    tools = Path(os.environ.get("PIPELINE_CHECK_TOOLS", compose_dir.parent / ".tools" / "bin"))
    placeholders = {
        "python": sys.executable,
        "compose_dir": str(compose_dir),
        "run_dir": str(run_dir),
        "kafka_libs": str(libs.resolve()),
        "tools": str(tools.resolve()),
        "port": SimpleNamespace(**resolved_ports),
    }

    def fill(setting: str, text: str) -> str:
        return _render(placeholders, f"{file.name}:{setting}", text)

    unknown = set(service_env or {}) - set(model.services)
    if unknown:
        raise ConfigError(
            "service env", sorted(unknown), "names no service of the stack", f"use {sorted(model.services)}"
        )
    shared_env = {k: fill(f"env.{k}", v) for k, v in model.env.items()}
    services = {
        name: ServiceSpec(
            name=name,
            command=tuple(fill(f"services.{name}.command", part) for part in svc.command),
            depends_on=tuple(svc.depends_on),
            health_kind=next(iter(svc.health)),
            health_target=fill(f"services.{name}.health", next(iter(svc.health.values()))),
            env={
                **shared_env,
                **{k: fill(f"services.{name}.env.{k}", v) for k, v in svc.env.items()},
                **(service_env or {}).get(name, {}),
            },
            start_timeout=svc.start_timeout,
            optional=svc.optional,
            prepare=svc.prepare,
        )
        for name, svc in model.services.items()
    }
    exports = {k: fill(f"exports.{k}", v) for k, v in model.exports.items()}
    proxies = {
        name: (fill(f"proxies.{name}.listen", p.listen), fill(f"proxies.{name}.upstream", p.upstream))
        for name, p in model.proxies.items()
    }
    toxiproxy = fill("stack.toxiproxy", model.stack.toxiproxy) if model.stack.toxiproxy else None
    spec = StackSpec(
        model.stack.name,
        file,
        compose_dir,
        run_dir,
        resolved_ports,
        services,
        placeholders,
        exports,
        proxies,
        toxiproxy,
    )
    spec.start_order()  # fail early on cycles
    return spec
