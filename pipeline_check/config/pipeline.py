"""The whole of pipeline.toml (:class:`PipelineConfig`), and what a scenario asks of a run: its load, its
thresholds in its mode (injected or passive), each checked to suit the mode and the stages, when the file
loads. :class:`~pipeline_check.runs.plan.Plan` asks these once per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, model_validator

from pipeline_check.backends.capabilities import STAGE_TYPES
from pipeline_check.config.errors import choices, config_error
from pipeline_check.config.plugins import contract_parts, resolve_sections, sampled_families
from pipeline_check.config.scenarios import BUILTIN_SCENARIOS, Scenario, injects_nothing
from pipeline_check.config.sections import (
    LoadConfig,
    LoadOverride,
    MessagesConfig,
    PassiveConfig,
    ReportConfig,
    SlaConfig,
    SourceSection,
    StageSection,
    _Model,
)
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.redaction import redact
from pipeline_check.faults.steps import FaultTargets, Owned, on_brokers
from pipeline_check.trace.stages import SOURCE, Route
from pipeline_check.verdict.contract_spec import StageContract
from pipeline_check.verdict.thresholds import API_RESPONSE, Threshold, parse_threshold, parse_thresholds


class PipelineConfig(_Model):
    """The whole of pipeline.toml."""

    source: SourceSection
    messages: MessagesConfig = MessagesConfig()
    stages: tuple[StageSection, ...]
    load: LoadConfig = LoadConfig()
    sla: SlaConfig = SlaConfig()
    scenarios: dict[str, Scenario] = Field(default_factory=dict)
    report: ReportConfig = ReportConfig()
    faults: FaultTargets = FaultTargets()  # what this config owns, and faults may therefore act on
    passive: PassiveConfig = PassiveConfig()
    contract: dict[str, StageContract] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plugins(cls, data: Any, info: ValidationInfo) -> Any:
        """Resolve the source's and stages' plugins and validate their sections with their own models."""
        if not isinstance(data, dict):
            return data
        context = info.context or {}
        file = context.get("file", "pipeline.toml")
        resolved = {**data, **resolve_sections(data, file, list(cls.model_fields))}
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
        if self.load.background.engine == "trogdor":
            self.background_target()
        owned = None
        for name, scenario in self.scenarios.items():
            if scenario.faults:
                owned = owned or self.owned()
                owned.check(scenario.faults, f"scenarios.{name}.faults")
                broker_steps = [i for i, f in enumerate(scenario.faults) if on_brokers(f, owned.brokers)]
                if broker_steps and self.kafka_cluster() is None:
                    raise ConfigError(
                        f"scenarios.{name}.faults[{broker_steps[0]}].target", scenario.faults[broker_steps[0]].target,
                        "acts on Kafka brokers, and no Kafka stage or [faults] bootstrap says where the cluster is",
                        "set [faults] bootstrap",
                    )  # fmt: skip
        return self

    def background_target(self) -> tuple[str, str]:
        """Where Trogdor's agents send background trades: (bootstrap, topic), from ``[load.background]`` or
        the first Kafka stage (the raw topic the pipeline reads)."""
        given = self.load.background
        kafka = next((k for k in self._kafka_stages() if k[2]), None)
        bootstrap = given.bootstrap or (kafka[1] if kafka is not None else None)
        topic = given.topic or (kafka[2] if kafka is not None else None)
        if bootstrap is None or topic is None:
            missing = "load.background.bootstrap" if bootstrap is None else "load.background.topic"
            raise ConfigError(
                missing, None, 'engine "trogdor" sends to Kafka, and no Kafka stage says where',
                "set load.background.bootstrap and load.background.topic",
            )  # fmt: skip
        symbols = self.messages.background_symbols
        if not 0 < len(symbols) <= 100:
            raise ConfigError(
                "messages.background_symbols", list(symbols), "Trogdor shares records out in whole percents",
                "give 1 to 100 background symbols",
            )  # fmt: skip
        return bootstrap, topic

    def _kafka_stages(self) -> list[tuple[str, str, str]]:
        """(stage, bootstrap, topic) of every stage that talks to Kafka (topic "" when it names none)."""
        found = []
        for s in self.stages:
            bootstrap = getattr(s.settings, "bootstrap", None)
            if isinstance(bootstrap, str):
                found.append((s.name, bootstrap, str(getattr(s.settings, "topic", "") or "")))
        return found

    def kafka_cluster(self) -> tuple[str, str, tuple[str, ...]] | None:
        """The Kafka cluster faults on brokers read leadership from: (bootstrap, its setting, the topics
        of the Kafka stages), from ``[faults] bootstrap`` or else the first stage with a bootstrap."""
        kafka = self._kafka_stages()
        topics = tuple(dict.fromkeys(topic for _, _, topic in kafka if topic))
        if self.faults.bootstrap is not None:
            return self.faults.bootstrap, "faults.bootstrap", topics
        if not kafka:
            return None
        name, bootstrap, _ = kafka[0]
        return bootstrap, f"stages.{name}.bootstrap", topics

    def owned(self) -> Owned:
        """What this config's faults may act on: its stack's services and links, SQLite catalogs."""
        services: tuple[str, ...] = ()
        brokers: tuple[str, ...] = ()
        links = self.faults.links
        if self.faults.stack is not None:
            from pipeline_check.stack.spec import load_stack

            spec = load_stack(self.faults.stack, run_dir=self.faults.run_dir)
            services = tuple(spec.services)
            brokers = spec.kafka_nodes
            links = links or tuple(spec.proxies)
        catalogs = tuple(
            s.name for s in self.stages if (lock := STAGE_TYPES.lock(s.type)) is not None and lock.lockable(s.settings)
        )
        return Owned(services, links, catalogs, brokers)

    def _check_stage_keys(self) -> None:
        """``[contract.STAGE]`` and ``passive.event_time`` name configured stages, with parts they can hold."""
        names = [s.name for s in self.stages]
        for setting, keys in (("contract", self.contract), ("passive.event_time", self.passive.event_time)):
            for name in keys:
                if name not in names:
                    raise ConfigError(f"{setting}.{name}", name, "is not a configured stage", choices(name, names))
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
            raise ConfigError("--scenario", name, "is not a known scenario", choices(name, list(known)))
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
        texts = self.threshold_texts(scenario, passive=passive)
        for setting, text in texts:
            threshold = parse_threshold(text, stages, setting)
            self._check_mode(threshold, setting, passive)
            if not passive:
                own = scenario is not None and self.scenario(scenario).load.rate is not None
                where = f"scenarios.{scenario}.load.rate" if own else "load.rate"
                check_rate_floor(threshold, setting, self.load_for(scenario).rate, where)
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
            raise config_error(exc, "overrides", root=PipelineConfig) from None
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
        if not passive and "rate" in load:  # name the option, not the scenario it patched
            for setting, text in extra + self.threshold_texts(scenario):
                check_rate_floor(parse_threshold(text, self.stage_names(), setting), setting, load["rate"], "--rate")
        base_setting = "passive.thresholds" if passive else "sla.thresholds"
        parse_thresholds([*((base_setting, t) for t in base_texts), *extra], self.stage_names())
        for setting, text in extra:
            self._check_mode(parse_threshold(text, self.stage_names(), setting), setting, passive)
        patched.thresholds_for(scenario, passive=passive)  # duplicates and never-passing thresholds are errors too
        return patched

    def threshold_texts(self, scenario: str | None, *, passive: bool = False) -> list[tuple[str, str]]:
        """``(setting, text)`` of each threshold a run of ``scenario`` judges: ``[sla]``'s (or ``[passive]``'s)
        unless the scenario opts out, and the scenario's own."""
        chosen = self.scenario(scenario) if scenario is not None else None
        if chosen is not None and not chosen.inherit_thresholds:
            texts = []
        elif passive:
            texts = [("passive.thresholds", t) for t in self.passive_thresholds()]
        else:
            texts = [("sla.thresholds", t) for t in self.sla.thresholds]
        if chosen is not None:
            texts += [(f"scenarios.{scenario}.thresholds", t) for t in chosen.thresholds]
        return texts

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data in the shape of pipeline.toml, secrets masked (for reports)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        data["source"] = {"type": self.source.type, **data["source"]["settings"]}
        data["stages"] = {
            s["name"]: {"type": s["type"], "upstream": s["upstream"], **s["settings"]} for s in data["stages"]
        }
        return redact(data)  # type: ignore[no-any-return]


def check_rate_floor(t: Threshold, setting: str, rate: float, rate_setting: str) -> None:
    """An absolute throughput floor above the rate the run injects at can only be missed: the validator would
    never ask for it, and the shortfall would be its own."""
    if t.metric != "throughput" or t.relative or t.op not in (">", ">="):
        return
    if rate > t.value or (t.op == ">=" and rate == t.value):
        return
    raise ConfigError(
        rate_setting, rate, f"is below the {t.text!r} floor ({setting}): the run would never inject that fast",
        f"raise the rate to {'more than' if t.op == '>' else 'at least'} {t.value:g}/s, or lower the floor",
    )  # fmt: skip
