"""The source's and stages' plugins, resolved through the capability registry when the file loads: each
section's ``type`` names a plugin, whose own settings model validates the rest of the section."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline_check.backends.capabilities import INJECTORS, PROBES, STAGE_TYPES
from pipeline_check.config.errors import choices, config_error
from pipeline_check.config.sections import SourceSection, StageSection
from pipeline_check.core.errors import ConfigError, PluginError
from pipeline_check.core.plugins import PluginSettings, Registry
from pipeline_check.trace.stages import BUILTIN, SOURCE, Route

_GENERIC_STAGE_KEYS = ("type", "upstream", "branch")


def sampled_families(probe_type: str) -> tuple[str, ...]:
    """The series a passive run samples at a stage of ``probe_type`` (none without a sampler)."""
    sampler = STAGE_TYPES.sampler(probe_type)
    return sampler.provides if sampler is not None else ()


def contract_parts(probe_type: str) -> tuple[str, ...]:
    """The ``[contract]`` parts a stage of ``probe_type`` can hold (none without a contract reader)."""
    reader = STAGE_TYPES.contract(probe_type)
    return reader.parts if reader is not None else ()


def resolve_sections(data: dict[str, Any], file: str, sections: list[str]) -> dict[str, Any]:
    """``source`` and ``stages`` sections as validated :class:`SourceSection` / :class:`StageSection`."""
    for key in data:
        if key not in sections:
            raise ConfigError(f"{file}: {key}", data[key], "is not a known section", choices(key, sections))
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
                f"give it a probe `type` and an `upstream`, or use a built-in one: {choices(name, list(BUILTIN))}",
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
        raise ConfigError(setting, name, f"is not a known {registry.kind}", choices(name, registry.names()))
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
        raise config_error(exc, file, where, root=model) from None
