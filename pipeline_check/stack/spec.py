"""stack.toml -> a typed, validated stack description with its placeholders filled in.

A stack file may extend another (``[stack] extends = "../stack.toml"``): the base is read first and the
file's tables are merged into it key by key (a service's ``env`` gains variables; lists and values are
replaced). A profile is such a file: ``--profile lakehouse`` is ``profiles/lakehouse.toml`` beside the
stack file. Services run from the folder of the base file, and ``run_dir`` is relative to the file that
sets it. The *home* is the run folder that records which stack runs there (``stack.record``): the
``run_dir`` given, else the one the base file names, so every profile of a stack file shares it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline_check.core.errors import ConfigError, StackError

HealthKind = Literal["kafka", "http", "tcp"]
PrepareStep = Literal["kafka-kraft", "toxiproxy", "trogdor"]  # stack.prepare.PREPARERS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_RUN_DIR = "../.stack"  # relative to the base file


class _StackSection(_Strict):
    name: str
    run_dir: str = DEFAULT_RUN_DIR
    toxiproxy: str | None = None  # the API of the stack's Toxiproxy, whose proxies network faults act on
    extends: str | None = None  # consumed while reading; kept so a typo elsewhere still gets named


class _ProxyModel(_Strict):
    listen: str
    upstream: str


class _PrepareModel(_Strict):
    step: PrepareStep
    template: str | None = None  # relative to the base file's folder
    folder: str | None = None  # where the step writes
    vars: dict[str, str] = {}  # the template's {vars.NAME}


class _ServiceModel(_Strict):
    command: list[str] = Field(min_length=1)
    depends_on: list[str] = []
    health: dict[HealthKind, str] = Field(min_length=1, max_length=1)
    env: dict[str, str] = {}
    start_timeout: float = Field(default=30.0, gt=0)
    optional: bool = False
    prepare: PrepareStep | _PrepareModel | None = None
    group: str | None = None  # services that only become healthy together (a Raft quorum)


class _TrogdorModel(_Strict):
    coordinator: str  # host:port of the coordinator's REST API
    agents: dict[str, str] = Field(min_length=1)  # node name -> host:port of its REST API

    @model_validator(mode="after")
    def _names_differ(self) -> _TrogdorModel:
        if COORDINATOR_NODE in self.agents:
            raise ValueError(f"an agent may not be named {COORDINATOR_NODE!r}: that is the coordinator's node")
        return self


class _StackModel(_Strict):
    stack: _StackSection
    ports: dict[str, int]
    env: dict[str, str] = {}
    exports: dict[str, str] = {}
    proxies: dict[str, _ProxyModel] = {}
    trogdor: _TrogdorModel | None = None
    services: dict[str, _ServiceModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _dependencies_exist(self) -> _StackModel:
        for name, service in self.services.items():
            for dep in service.depends_on:
                if dep not in self.services:
                    raise ValueError(f"services.{name}.depends_on names unknown service {dep!r}")
        return self


COORDINATOR_NODE = "coordinator"  # the Trogdor coordinator's node name in the platform file


@dataclass(frozen=True, slots=True)
class PrepareSpec:
    """A step a service needs before its process starts (``prepare =``), placeholders filled in."""

    step: PrepareStep
    template: str | None = None
    folder: Path | None = None
    vars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrogdorSpec:
    """Trogdor's platform: the coordinator's and each agent's REST address (host:port)."""

    coordinator: str
    agents: Mapping[str, str]


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
    prepare: PrepareSpec | None
    group: str | None = None


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
    trogdor: TrogdorSpec | None = None
    home: Path | None = None  # the run folder that records what runs there; None: run_dir

    @property
    def kafka_libs(self) -> Path:
        return Path(str(self.placeholders["kafka_libs"]))

    @property
    def kafka_nodes(self) -> tuple[str, ...]:
        """The services that are Kafka nodes (prepared as ``kafka-kraft``), in file order."""
        return tuple(n for n, s in self.services.items() if s.prepare is not None and s.prepare.step == "kafka-kraft")

    @property
    def record_dir(self) -> Path:
        """Where ``stack.record`` keeps which stack runs: the home, else the run folder itself."""
        return self.home or self.run_dir

    @property
    def profile(self) -> str | None:
        """The profile's name when the file is ``profiles/NAME.toml`` beside the base file, else None."""
        if self.file.parent == self.compose_dir / "profiles":
            return self.file.stem
        return None

    @property
    def label(self) -> str:
        """How messages name this stack: its profile, the default stack, or its file."""
        if self.profile is not None:
            return f"profile {self.profile!r}"
        return "the default stack" if self.file.parent == self.compose_dir else f"stack file {self.file}"

    def render(self, setting: str, text: str, **extra: object) -> str:
        """Fill ``{python}``, ``{compose_dir}``, ``{stack_file}``, ``{run_dir}``, ``{kafka_libs}``, ``{tools}``,
        ``{port.NAME}`` (and ``extra``, e.g. a prepare step's ``{vars.NAME}``)."""
        return _render({**self.placeholders, **extra}, f"{self.file.name}:{setting}", text)

    def ports_of(self, service: str) -> dict[str, int]:
        """The ports named after ``service`` (``kafka2``, ``kafka2_controller``; a hyphen in the service's
        name is an underscore in the port's), each given to the service with the longest such name."""

        def owner(port: str) -> str | None:
            named = [s for s in self.services if port == (key := s.replace("-", "_")) or port.startswith(f"{key}_")]
            return max(named, key=len, default=None)

        return {name: port for name, port in self.ports.items() if owner(name) == service}

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
            "use {python}, {compose_dir}, {stack_file}, {run_dir}, {kafka_libs}, {tools} or {port.NAME}",
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


def _read(file: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Path, str | None]:
    """The raw data of ``file`` with the files it extends merged under it, the base file's folder and the
    ``run_dir`` the base file names (None: the default)."""
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
    own_run_dir = None
    if isinstance(stack, dict):
        if isinstance(stack.get("run_dir"), str):  # relative to the file that says it
            stack["run_dir"] = own_run_dir = str(file.parent / stack["run_dir"])
        parent = stack.pop("extends", None)
        if isinstance(parent, str):
            base, compose_dir, base_run_dir = _read((file.parent / parent).resolve(), (*chain, file))
            return _merge(base, raw), compose_dir, base_run_dir
    return raw, file.parent, own_run_dir


def load_stack(
    file: Path | None = None,
    *,
    run_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    kafka_libs: Path | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
    home: Path | None = None,
) -> StackSpec:
    """Read and validate ``file``; ``run_dir``, ``ports`` and ``service_env`` (extra variables per
    service, e.g. to run a deliberately broken stack) override what it says; ``home`` is the run folder
    that records what runs (default: ``run_dir`` when given, else the one the base file names)."""
    file = (file or default_stack_file()).resolve()
    raw, compose_dir, base_run_dir = _read(file)
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
        run_dir = Path(env_dir) if env_dir else None
    if run_dir is None:
        home = home or compose_dir / (base_run_dir or DEFAULT_RUN_DIR)
        run_dir = compose_dir / model.stack.run_dir
    run_dir = run_dir.resolve()
    home = (home or run_dir).resolve()
    libs = kafka_libs or Path(os.environ.get("PIPELINE_CHECK_KAFKA_LIBS", compose_dir / "kafka" / "libs"))
    # tools `make setup` builds (Toxiproxy's server), beside the project's .venv
    tools = Path(os.environ.get("PIPELINE_CHECK_TOOLS", compose_dir.parent / ".tools" / "bin"))
    placeholders = {
        "python": sys.executable,
        "compose_dir": str(compose_dir),
        "stack_file": str(file),
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
            prepare=_prepare(svc.prepare, f"services.{name}.prepare", fill, compose_dir),
            group=svc.group,
        )
        for name, svc in model.services.items()
    }
    exports = {k: fill(f"exports.{k}", v) for k, v in model.exports.items()}
    proxies = {
        name: (fill(f"proxies.{name}.listen", p.listen), fill(f"proxies.{name}.upstream", p.upstream))
        for name, p in model.proxies.items()
    }
    toxiproxy = fill("stack.toxiproxy", model.stack.toxiproxy) if model.stack.toxiproxy else None
    trogdor = None
    if model.trogdor is not None:
        trogdor = TrogdorSpec(
            fill("trogdor.coordinator", model.trogdor.coordinator),
            {name: fill(f"trogdor.agents.{name}", address) for name, address in model.trogdor.agents.items()},
        )
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
        trogdor,
        home,
    )
    spec.start_order()  # fail early on cycles
    return spec


def _prepare(
    model: PrepareStep | _PrepareModel | None, setting: str, fill: Callable[[str, str], str], compose_dir: Path
) -> PrepareSpec | None:
    """``prepare = "step"`` or a table with the step's template, folder and vars, placeholders filled."""
    if model is None:
        return None
    if isinstance(model, str):
        return PrepareSpec(model)
    template = None
    if model.template is not None:
        template = model.template
        if not (compose_dir / template).is_file():
            raise ConfigError(f"{setting}.template", template, f"is not a file in {compose_dir}", "fix the path")
    return PrepareSpec(
        model.step,
        template,
        Path(fill(f"{setting}.folder", model.folder)) if model.folder is not None else None,
        {k: fill(f"{setting}.vars.{k}", v) for k, v in model.vars.items()},
    )
