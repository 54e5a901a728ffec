"""pipeline.toml -> typed, validated settings.

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment before validation (``$$`` is a
literal ``$``). The source and each stage name their plugin (``type``); the plugin's own settings model
validates the rest of its section, so every setting is checked when the file loads, before anything
runs. Errors are one line naming the setting, the value and the fix, with a "did you mean" hint for a
misspelt key; secrets are masked in every printed form (:mod:`pipeline_check.core.redaction`).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from pipeline_check.backends.capabilities import INJECTORS, PROBES, STAGE_TYPES
from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError, PluginError
from pipeline_check.core.plugins import PluginSettings, Registry
from pipeline_check.core.redaction import redact
from pipeline_check.faults.steps import FaultStep, FaultTargets, Owned
from pipeline_check.reporting.registry import REPORTERS
from pipeline_check.trace.stages import BUILTIN, SOURCE, Route
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.thresholds import (
    API_RESPONSE,
    DEFAULT_THRESHOLDS,
    Threshold,
    parse_threshold,
    parse_thresholds,
)

SCENARIOS = ("smoke", "freshness", "throughput")
_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")
_GENERIC_STAGE_KEYS = ("type", "upstream", "branch")

Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSection(_Model):
    """``[source]``: the injector (``type``) and its own settings."""

    type: str
    settings: SerializeAsAny[PluginSettings]


class StageSection(_Model):
    """``[stages.NAME]``: the probe that watches the stage (``type``), its declared upstream, and the
    probe's own settings."""

    name: str
    type: str
    upstream: str
    branch: bool
    settings: SerializeAsAny[PluginSettings]


class MessagesConfig(_Model):
    # canaries' own symbol; with a Kafka stage, more are derived from it so the standard key
    # partitioner spreads canaries over every partition (unless canary_symbols names them)
    symbol: Symbol = "CANARYUSDT"
    canary_symbols: tuple[Symbol, ...] = ()
    background_symbols: tuple[Symbol, ...] = ("BTCUSDT", "ETHUSDT")
    base_price: int = Field(default=65_000, gt=0)
    # the decimal type prices and quantities are declared with downstream: canaries use every digit
    precision: int = Field(default=18, ge=1, le=18)
    scale: int = Field(default=8, ge=0, le=18)

    @model_validator(mode="after")
    def _scale_fits(self) -> MessagesConfig:
        if self.scale > self.precision:
            raise ValueError(f"scale {self.scale} exceeds precision {self.precision}")
        return self


class LoadConfig(_Model):
    count: int = Field(default=1000, ge=1, le=67_108_863)
    rate: float = Field(default=100.0, gt=0)
    background_rate: float = Field(default=0.0, ge=0)
    seed: int = 42
    drain_timeout: Duration = 60.0
    # how long probes keep watching after the last canary arrived, for late copies and retractions;
    # None: the larger of 2 s and twice the longest gap between deliveries at the last stage
    settle: NonNegativeDuration | None = None
    # concurrent API queries (symbols and windows drawn from the run) for the run's duration
    api_concurrency: int = Field(default=0, ge=0, le=64)


class LoadOverride(_Model):
    count: int | None = Field(default=None, ge=1, le=67_108_863)
    rate: float | None = Field(default=None, gt=0)
    background_rate: float | None = Field(default=None, ge=0)
    seed: int | None = None
    drain_timeout: Duration | None = None
    settle: NonNegativeDuration | None = None
    api_concurrency: int | None = Field(default=None, ge=0, le=64)


class SlaConfig(_Model):
    thresholds: tuple[str, ...] = DEFAULT_THRESHOLDS
    min_samples: int = Field(default=0, ge=0)


class Scenario(_Model):
    description: str = ""
    mode: Literal["active", "passive"] = "active"  # passive: inject nothing, sample the pipeline's own data
    load: LoadOverride = LoadOverride()
    thresholds: tuple[str, ...] = ()
    # false: judge only this scenario's thresholds, not [sla]'s too (a fault scenario judges freshness
    # per window, not over canaries that met the fault)
    inherit_thresholds: bool = True
    faults: tuple[FaultStep, ...] = ()  # applied while canaries flow (pipeline_check.faults.steps)


class PassiveConfig(_Model):
    """``[passive]``: how a passive run samples each stage's freshness from the data itself."""

    window: Duration = 30.0
    interval: Duration | None = None  # None: window / 150, enough samples for a p99 with room to spare
    symbols: tuple[Symbol, ...] = ()  # what the API is asked about; () = messages.background_symbols
    # per stage, the record field (Kafka JSON, API record; epoch ms) or table column holding the event
    # time; unset: the broker timestamp (kafka_topic), event_time (iceberg), the stage's time_field (api)
    event_time: dict[str, str] = Field(default_factory=dict)
    thresholds: tuple[str, ...] = ()  # () = freshness of the last stage and each consumer group's lag, p95 < 30s

    @property
    def sample_interval(self) -> float:
        return self.interval if self.interval is not None else max(0.05, self.window / 150)


class ReportConfig(RootModel[dict[str, Path]]):
    """``[report]``: a path per file reporter (``json``, ``junit``, ``html``, or one a plugin registers)."""

    model_config = ConfigDict(frozen=True)
    root: dict[str, Path] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            file = (info.context or {}).get("file", "pipeline.toml")
            known = REPORTERS.in_order()
            for key, value in data.items():
                if key not in known:
                    setting = f"{file}: report.{key}"
                    raise ConfigError(
                        setting, redact(value, key), "is not a known setting", _choices(key, sorted(known))
                    )
        return data

    @model_serializer(mode="wrap")
    def _every_reporter(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        given: dict[str, Any] = handler(self)
        return {name: given.get(name) for name in REPORTERS.in_order()}

    def path(self, name: str) -> Path | None:
        """Where reporter ``name`` writes, when set."""
        return self.root.get(name)


BUILTIN_SCENARIOS = {
    # 100 canaries: the fewest that give the default p99 threshold enough samples; over 10 s, so a pipeline
    # that commits every second or so, and stalls now and then, still shows the rate it keeps up with
    "smoke": Scenario(
        description="100 canaries over 10 s: a quick yes/no; detects a loss rate above 3% (95%)",
        load=LoadOverride(count=100, rate=10),
    ),
    "freshness": Scenario(
        description="1,000 canaries at 100/s over background load; freshness and loss (detects a loss rate above 0.3%)",
        load=LoadOverride(count=1000, rate=100, background_rate=200),
    ),
    "throughput": Scenario(
        description="10,000 canaries at 1,000/s: delivered throughput must keep up (detects a loss rate above 0.03%)",
        load=LoadOverride(count=10_000, rate=1000),
        thresholds=("throughput >= 800/s",),
    ),
}


def sampled_families(probe_type: str) -> tuple[str, ...]:
    """The series a passive run samples at a stage of ``probe_type`` (none without a sampler)."""
    sampler = STAGE_TYPES.sampler(probe_type)
    return sampler.provides if sampler is not None else ()


def contract_parts(probe_type: str) -> tuple[str, ...]:
    """The ``[contract]`` parts a stage of ``probe_type`` can hold (none without a contract reader)."""
    reader = STAGE_TYPES.contract(probe_type)
    return reader.parts if reader is not None else ()


class PipelineConfig(_Model):
    """The whole of pipeline.toml."""

    source: SourceSection
    messages: MessagesConfig = MessagesConfig()
    stages: tuple[StageSection, ...]
    load: LoadConfig = LoadConfig()
    sla: SlaConfig = SlaConfig()
    scenarios: dict[str, Scenario] = {}
    report: ReportConfig = ReportConfig()
    faults: FaultTargets = FaultTargets()  # what this config owns, and faults may therefore act on
    passive: PassiveConfig = PassiveConfig()
    contract: dict[str, StageContract] = {}

    @model_validator(mode="before")
    @classmethod
    def _plugins(cls, data: Any, info: ValidationInfo) -> Any:
        """Resolve the source's and stages' plugins and validate their sections with their own models."""
        if not isinstance(data, dict):
            return data
        context = info.context or {}
        file = context.get("file", "pipeline.toml")
        resolved = {**data, **_resolve_sections(data, file)}
        folder = context.get("folder")
        targets = data.get("faults")
        if folder is not None and isinstance(targets, dict):  # paths in [faults] are relative to the file
            resolved["faults"] = {
                k: str(Path(folder) / v) if k in ("stack", "run_dir") and isinstance(v, str) else v
                for k, v in targets.items()
            }
        return resolved

    @model_validator(mode="after")
    def _thresholds_parse(self) -> PipelineConfig:
        self._check_stage_keys()
        for name in self.scenarios:
            # parse every threshold now, not halfway through a run
            self.thresholds_for(name, passive=self.is_passive(name))
        self.thresholds_for(None)
        self.thresholds_for(None, passive=True)
        owned = None
        for name, scenario in self.scenarios.items():
            if scenario.faults:
                owned = owned or self.owned()
                owned.check(scenario.faults, f"scenarios.{name}.faults")
        return self

    def owned(self) -> Owned:
        """What this config's faults may act on: its stack's services and links, SQLite catalogs."""
        services: tuple[str, ...] = ()
        links = self.faults.links
        if self.faults.stack is not None:
            from pipeline_check.stack.spec import load_stack

            spec = load_stack(self.faults.stack, run_dir=self.faults.run_dir)
            services = tuple(spec.services)
            links = links or tuple(spec.proxies)
        catalogs = tuple(
            s.name for s in self.stages if str(getattr(s.settings, "catalog", {}).get("type", "")) == "sql"
        )
        return Owned(services, links, catalogs)

    def _check_stage_keys(self) -> None:
        """``[contract.STAGE]`` and ``passive.event_time`` name configured stages, with parts they can hold."""
        names = [s.name for s in self.stages]
        for setting, keys in (("contract", self.contract), ("passive.event_time", self.passive.event_time)):
            for name in keys:
                if name not in names:
                    raise ConfigError(f"{setting}.{name}", name, "is not a configured stage", _choices(name, names))
        for name, spec in self.contract.items():
            kind = self.stage(name).type  # type: ignore[union-attr]  # checked just above
            allowed = contract_parts(kind)
            for part in spec.parts():
                if part not in allowed:
                    raise ConfigError(
                        f"contract.{name}.{part}", kind,
                        f"a stage of type {kind} holds {' and '.join(allowed) or 'no contract part'}",
                        f"declare {part} on a stage of type "
                        + " or ".join(t for t in STAGE_TYPES.names() if part in contract_parts(t)),
                    )  # fmt: skip

    # -- stages ------------------------------------------------------------------------------------

    @property
    def route(self) -> Route:
        return Route.of({s.name: (s.upstream, s.branch) for s in self.stages})

    @property
    def query_symbols(self) -> tuple[str, ...]:
        """The symbols a passive run's looks and load and the contract check ask an API about."""
        return self.passive.symbols or self.messages.background_symbols

    def stage(self, name: str) -> StageSection | None:
        return next((s for s in self.stages if s.name == name), None)

    def stage_names(self) -> tuple[str, ...]:
        return self.route.stages

    def only_stages(self, last: str) -> PipelineConfig:
        """A copy that probes ``last`` and the stages it is measured through, nothing downstream."""
        route = self.route
        keep = {last}
        up = route.upstream[last]
        while up != SOURCE:
            keep.add(up)
            up = route.upstream[up]
        keep |= {s for s in route.stages if route.upstream[s] in keep and self._branch(s)}
        return self.model_copy(update={"stages": tuple(s for s in self.stages if s.name in keep)})

    def _branch(self, name: str) -> bool:
        section = self.stage(name)
        return section is not None and section.branch

    # -- scenarios and thresholds --------------------------------------------------------------------

    def scenario(self, name: str) -> Scenario:
        known = {**BUILTIN_SCENARIOS, **self.scenarios}
        if name not in known:
            raise ConfigError("--scenario", name, "is not a known scenario", _choices(name, list(known)))
        return known[name]

    def load_for(self, scenario: str | None) -> LoadConfig:
        if scenario is None:
            return self.load
        override = self.scenario(scenario).load.model_dump(exclude_none=True)
        return self.load.model_copy(update=override)

    def is_passive(self, scenario: str | None, flag: bool = False) -> bool:
        """Whether a run of ``scenario`` (``--passive`` given: ``flag``) is passive; a passive flag with an
        active scenario is an error."""
        if scenario is None:
            return flag
        passive = self.scenario(scenario).mode == "passive"
        if flag and not passive:
            raise ConfigError(
                "--scenario", scenario, "is not a passive scenario and --passive injects nothing",
                'drop --passive, or give the scenario mode = "passive"',
            )  # fmt: skip
        return passive

    def thresholds_for(self, scenario: str | None, *, passive: bool = False) -> list[Threshold]:
        """The thresholds a run of ``scenario`` judges: ``[sla]`` (active) or ``[passive]`` ones, plus the
        scenario's; each must suit the mode."""
        stages = self.stage_names()
        if scenario is not None and self.is_passive(scenario) != passive:
            raise injects_nothing(scenario)
        chosen = self.scenario(scenario) if scenario is not None else None
        if chosen is not None and not chosen.inherit_thresholds:
            texts = []
        elif passive:
            texts = [("passive.thresholds", t) for t in self.passive_thresholds()]
        else:
            texts = [("sla.thresholds", t) for t in self.sla.thresholds]
        if chosen is not None:
            texts += [(f"scenarios.{scenario}.thresholds", t) for t in chosen.thresholds]
        for setting, text in texts:
            self._check_mode(parse_threshold(text, stages, setting), setting, passive)
        return parse_thresholds(texts, stages)

    def passive_thresholds(self) -> tuple[str, ...]:
        """``[passive] thresholds``, or by default the last stage's freshness and each consumer group's lag."""
        if self.passive.thresholds:
            return self.passive.thresholds
        final = self.stage(self.route.final)
        defaults = (
            [f"freshness.{final.name}.p95 < 30s"] if final and "freshness" in sampled_families(final.type) else []
        )
        defaults += [f"lag.{s.name}.p95 < 30s" for s in self.stages if "lag" in sampled_families(s.type)]
        return tuple(defaults)

    def _check_mode(self, t: Threshold, setting: str, passive: bool) -> None:
        """A threshold judges something the run's mode measures, at a stage that gives it."""
        if passive and t.needs_canaries:
            raise ConfigError(
                setting, t.text, "judges injected canaries, and a passive run injects none",
                "use freshness., lag., lag_records. or snapshot_age.<stage>, api.response or contract",
            )  # fmt: skip
        if not passive and t.passive_only:
            raise ConfigError(
                setting, t.text, "is sampled by passive runs only",
                'move it to [passive] thresholds or to a scenario with mode = "passive"',
            )  # fmt: skip
        if t.series == API_RESPONSE and not any(STAGE_TYPES.offers(s.type, "load") for s in self.stages):
            raise ConfigError(setting, t.text, "times the API, and no stage is of type api", "configure [stages.api]")
        if t.passive_only and t.series is not None:
            family, stage = t.series.split(".")
            kind = self.stage(stage).type  # type: ignore[union-attr]  # the grammar checked the stage
            families = sampled_families(kind)
            if family not in families:
                raise ConfigError(
                    setting, t.text, f"stage {stage} (type {kind}) gives no {family} series",
                    f"its sampler gives {', '.join(families) or 'nothing: no passive sampler for that type'}",
                )  # fmt: skip
        if t.kind == "contract" and not self.contract:
            raise ConfigError(
                setting, t.text, "there is no [contract] section",
                "declare one; `pipeline-check contract --snapshot -c FILE` prints a start",
            )  # fmt: skip

    def with_overrides(
        self,
        scenario: str | None,
        *,
        thresholds: tuple[str, ...] = (),
        passive: bool = False,
        **load_settings: Any,
    ) -> PipelineConfig:
        """A copy whose ``scenario`` (or base load, without one) also judges ``thresholds`` and uses
        the given load settings (count, rate, background_rate, drain_timeout, ...); None keeps a setting.
        ``passive``: the thresholds are added to a passive run's."""
        passive = self.is_passive(scenario, passive)
        given = {k: v for k, v in load_settings.items() if v is not None}
        try:
            load = LoadOverride.model_validate(given).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise _config_error(exc, "overrides") from None
        base_texts = self.passive_thresholds() if passive else self.sla.thresholds
        if scenario is None and passive:
            sampled = self.passive.model_copy(update={"thresholds": (*base_texts, *thresholds)})
            patched = self.model_copy(update={"load": self.load.model_copy(update=load), "passive": sampled})
        elif scenario is None:
            sla = self.sla.model_copy(update={"thresholds": (*self.sla.thresholds, *thresholds)})
            patched = self.model_copy(update={"load": self.load.model_copy(update=load), "sla": sla})
        else:
            base = self.scenario(scenario)
            changed = base.model_copy(
                update={"load": base.load.model_copy(update=load), "thresholds": (*base.thresholds, *thresholds)}
            )
            patched = self.model_copy(update={"scenarios": {**self.scenarios, scenario: changed}})
        extra = [("--threshold", t) for t in thresholds]
        base_setting = "passive.thresholds" if passive else "sla.thresholds"
        parse_thresholds([*((base_setting, t) for t in base_texts), *extra], self.stage_names())
        for setting, text in extra:
            self._check_mode(parse_threshold(text, self.stage_names(), setting), setting, passive)
        patched.thresholds_for(scenario, passive=passive)  # duplicates and never-passing thresholds are errors too
        return patched

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data in the shape of pipeline.toml, secrets masked (for reports)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        data["source"] = {"type": self.source.type, **data["source"]["settings"]}
        data["stages"] = {
            s["name"]: {"type": s["type"], "upstream": s["upstream"], **s["settings"]} for s in data["stages"]
        }
        return redact(data)  # type: ignore[no-any-return]


def injects_nothing(scenario: str | None) -> ConfigError:
    """The error for a passive scenario run as an injected one."""
    return ConfigError(
        "--scenario", scenario, 'is a passive scenario (mode = "passive"): it injects nothing',
        "run it with `pipeline-check validate --scenario NAME` (pipeline_check.runs.passive)",
    )  # fmt: skip


def _resolve_sections(data: dict[str, Any], file: str) -> dict[str, Any]:
    """``source`` and ``stages`` sections as validated :class:`SourceSection` / :class:`StageSection`."""
    sections = list(PipelineConfig.model_fields)
    for key in data:
        if key not in sections:
            raise ConfigError(f"{file}: {key}", data[key], "is not a known section", _choices(key, sections))
    raw_source = data.get("source")
    raw_stages = data.get("stages")
    if isinstance(raw_stages, list | tuple) and all(isinstance(s, StageSection) for s in raw_stages):
        raw_stages = {s.name: s for s in raw_stages}  # already resolved (a copy being re-validated)
    if not isinstance(raw_source, dict | SourceSection):
        raise ConfigError(f"{file}: source", raw_source, "is required (a table)", "add [source] with type = ...")
    if not isinstance(raw_stages, dict) or not raw_stages:
        raise ConfigError(f"{file}: stages", raw_stages, "needs at least one stage", "add e.g. [stages.kafka]")
    resolved: dict[str, Any] = {}
    if not isinstance(raw_source, SourceSection):
        kind = str(raw_source.get("type", "websocket"))
        cls = _plugin(INJECTORS, kind, f"{file}: source.type")
        body = _inherited(cls.Settings, {k: v for k, v in raw_source.items() if k != "type"}, data)
        raw_source = SourceSection(type=kind, settings=_validate(cls.Settings, body, file, ("source",)))
        resolved["source"] = raw_source
    sent = INJECTORS.get(raw_source.type).sent_fields(raw_source.settings)
    resolved_stages: list[StageSection] = []
    for name, raw in raw_stages.items():
        where = f"{file}: stages.{name}"
        if isinstance(raw, StageSection):
            resolved_stages.append(raw)
            continue
        if not isinstance(raw, dict):
            raise ConfigError(where, raw, "is not a table", f"write [stages.{name}] with its settings")
        known = BUILTIN.get(name)
        probe = raw.get("type", known.probe if known else None)
        upstream = raw.get("upstream", known.upstream if known else None)
        if probe is None or upstream is None:
            raise ConfigError(
                where,
                name,
                "is not a built-in stage",
                f"give it a probe `type` and an `upstream`, or use a built-in one: {_choices(name, list(BUILTIN))}",
            )
        if upstream != SOURCE and upstream not in BUILTIN and upstream not in raw_stages:
            raise ConfigError(
                f"{where}.upstream", upstream, "is not a stage", f"use source or one of {', '.join(raw_stages)}"
            )
        cls = _plugin(PROBES, str(probe), f"{where}.type")
        body = _inherited(cls.Settings, {k: v for k, v in raw.items() if k not in _GENERIC_STAGE_KEYS}, data)
        settings = _validate(cls.Settings, body, file, ("stages", name))
        branch = bool(raw.get("branch", known.branch if known else False))
        resolved_stages.append(
            StageSection(name=name, type=str(probe), upstream=str(upstream), branch=branch, settings=settings)
        )
    for section in resolved_stages:
        _check_sent_fields(section, sent, file)
    try:
        route = Route.of({s.name: (s.upstream, s.branch) for s in resolved_stages})
    except ValueError as exc:
        raise ConfigError(f"{file}: stages", list(raw_stages), str(exc), "fix the stages' upstream settings") from None
    for section in resolved_stages:
        needs = getattr(PROBES.get(section.type), "needs_upstream_refs", False)
        if needs and route.upstream[section.name] == SOURCE:
            raise ConfigError(
                f"{file}: stages.{section.name}",
                section.type,
                f"maps canaries to positions recorded upstream, but no stage is configured upstream of {section.name}",
                f"configure [stages.{section.upstream}]",
            )
    resolved["stages"] = tuple(sorted(resolved_stages, key=lambda s: route.stages.index(s.name)))
    return resolved


def _check_sent_fields(section: StageSection, sent: tuple[str, ...], file: str) -> None:
    """A stage's ``fields`` compare against fields the source really sends."""
    fields: dict[str, str] = getattr(section.settings, "fields", {})
    for spec in fields.values():
        name = spec.partition(":")[0]
        if name not in sent:
            raise ConfigError(
                f"{file}: stages.{section.name}.fields",
                fields,
                f"{name!r} is not a field of the sent record",
                f"the source sends {', '.join(sent)}",
            )


def _plugin(registry: Registry[Any], name: str, setting: str) -> Any:
    if name not in registry.names():
        raise ConfigError(setting, name, f"is not a known {registry.kind}", _choices(name, registry.names()))
    try:
        return registry.get(name)
    except PluginError as exc:
        raise ConfigError(setting, name, str(exc), "fix or reinstall the plugin") from None


def _inherited(model: type[PluginSettings], section: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``section`` plus the settings its model takes from another section when left out."""
    body = dict(section)
    for path, names in model.inherit.items():
        other: Any = data
        for part in path.split("."):
            other = other.get(part) if isinstance(other, dict) else None
        if isinstance(other, dict):
            body |= {k: other[k] for k in names if k not in body and k in other}
    return body


def _validate(model: type[PluginSettings], body: dict[str, Any], file: str, where: tuple[str, ...]) -> PluginSettings:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _config_error(exc, file, where, model) from None


def substitute(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m["name"]
        if name is None:
            return "$"
        if name in env:
            return env[name]
        if m["default"] is not None:
            return m["default"]
        raise ConfigError(
            where, m[0], f"environment variable {name} is not set", f"export {name}=... or write ${{{name}:-default}}"
        )

    return _VAR.sub(repl, text)


def _substitute_tree(node: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(node, str):
        return substitute(node, env, path)
    if isinstance(node, dict):
        return {k: _substitute_tree(v, env, f"{path}.{k}" if path else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _choices(value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the field at ``loc`` (to suggest keys for a misspelt one)."""
    options: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        field = next((m.model_fields[str(part)] for m in options if str(part) in m.model_fields), None)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", (annotation,))
        options = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return options[0] if len(options) == 1 else None


def _config_error(
    exc: ValidationError, file: str, prefix: tuple[str, ...] = (), root: type[BaseModel] | None = None
) -> ConfigError:
    errors = exc.errors()
    # A misspelt key also leaves its real one missing: report the misspelling, which carries the hint.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    setting = f"{file}: " + (".".join(str(p) for p in (*prefix, *loc)) or "(top level)")
    value = redact(error.get("input"), loc[-1] if loc else None)  # a misspelt secret key must not leak
    if error["type"] == "extra_forbidden":
        owner = _model_at(root or PipelineConfig, loc)
        known = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
        return ConfigError(setting, value, "is not a known setting", _choices(str(loc[-1]), known))
    if error["type"] == "missing":
        return ConfigError(setting, None, "is required", "add it (see compose/pipeline.toml)")
    message = error["msg"].removeprefix("Value error, ")
    return ConfigError(setting, value, message, "see the config reference in README.md")


def find_config(path: Path | None = None) -> Path:
    """``path``, else ``$PIPELINE_CHECK_CONFIG``, else ``pipeline.toml``, else ``compose/pipeline.toml``."""
    if path is not None:
        return path
    if "PIPELINE_CHECK_CONFIG" in os.environ:
        return Path(os.environ["PIPELINE_CHECK_CONFIG"])
    for candidate in (Path("pipeline.toml"), Path("compose/pipeline.toml")):
        if candidate.exists():
            return candidate
    raise ConfigError(
        "--config",
        None,
        "no pipeline.toml here or in compose/",
        "pass -c path/to/pipeline.toml or run from the project root",
    )


def read_toml(path: Path, setting: str, fix: str) -> dict[str, Any]:
    """A TOML file as data, every way it can be unreadable turned into one ``ConfigError``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(setting, str(path), "does not exist", fix) from None
    except IsADirectoryError:
        raise ConfigError(setting, str(path), "is a directory", fix) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            setting, str(path), f"is not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(setting, str(path), f"cannot be read ({exc.strerror or exc})", fix) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(setting, str(path), f"is not valid TOML ({exc})", "fix the syntax") from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read, substitute and validate ``path``."""
    env = os.environ if env is None else env
    raw = read_toml(path, "--config", "pass -c path/to/pipeline.toml")
    data = _substitute_tree(raw, env, "")
    try:
        return PipelineConfig.model_validate(data, context={"file": path.name, "folder": path.resolve().parent})
    except ValidationError as exc:
        raise _config_error(exc, path.name) from None
