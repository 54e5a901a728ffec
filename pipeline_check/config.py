"""pipeline.toml -> typed, validated settings.

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment before validation (``$$`` is a
literal ``$``). Errors name the setting, the value and the fix, and suggest the closest known key for
a misspelt one. Secrets (API headers, catalog credentials) are masked in every printed form.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

from pipeline_check.errors import ConfigError
from pipeline_check.sla import Threshold, parse_threshold

STAGES = ("kafka", "consumer", "iceberg", "api")
SCENARIOS = ("smoke", "freshness", "throughput")
DEFAULT_THRESHOLDS = ("e2e.p99 < 30s", "lost == 0", "duplicates == 0", "corrupted == 0", "throughput >= 90%")
_SECRET_KEY = re.compile(r"pass|secret|token|credential|key|auth", re.IGNORECASE)
_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"30s"``, ``"2m"`` or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*", value)
        if m:
            return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m[2]]
    raise ValueError("expected a duration such as 500ms, 30s or 2m")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
NonNegativeDuration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebSocketSource(_Model):
    """pipeline-check serves the feed the ingestor dials."""

    type: Literal["websocket"] = "websocket"
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    path_prefix: str = "/ws/"
    subscribe_timeout: Duration = 30.0
    subscribers: int = Field(default=1, ge=1)


class KafkaSource(_Model):
    """pipeline-check produces straight to the raw topic (``stages.kafka``)."""

    type: Literal["kafka"] = "kafka"
    # how long a batch waits for more canaries before it ships; 0 ships at once, and batches still fill
    # while the previous one is in flight, so a longer linger only adds to the Kafka latency measured
    linger: NonNegativeDuration = 0.0


class MessagesConfig(_Model):
    symbol: str = Field(default="CANARYUSDT", pattern=r"^[A-Z0-9]{2,20}$")
    background_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    base_price: int = Field(default=65_000, gt=0)


class KafkaStage(_Model):
    bootstrap: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    tag_field: str = "t"
    fields: dict[str, str] = {}


class ConsumerStage(_Model):
    group: str = Field(min_length=1)
    poll_interval: Duration = 0.1


class IcebergStage(_Model):
    catalog: dict[str, str]
    catalog_name: str = "default"
    table: str = Field(pattern=r"^[\w.]+\.\w+$")
    tag_column: str = "trade_id"
    fields: dict[str, str] = {}
    poll_interval: Duration = 0.1

    def redacted_catalog(self) -> dict[str, str]:
        return {k: "***" if _SECRET_KEY.search(k) else v for k, v in self.catalog.items()}


class ApiStage(_Model):
    base_url: str = Field(pattern=r"^https?://")
    query: str = "/v1/trades?symbol={symbol}&start_time={start_ms}&end_time={end_ms}&limit={limit}"
    health: str | None = "/health"
    records: str = "data"
    tag_field: str = "trade_id"
    time_field: str | None = "trade_time"
    limit: int = Field(default=1000, ge=1)
    headers: dict[str, SecretStr] = {}
    timeout: Duration = 5.0
    poll_interval: Duration = 0.1
    max_poll_interval: Duration = 0.5
    fields: dict[str, str] = {}


class Stages(_Model):
    kafka: KafkaStage | None = None
    consumer: ConsumerStage | None = None
    iceberg: IcebergStage | None = None
    api: ApiStage | None = None

    @model_validator(mode="after")
    def _dependencies(self) -> Stages:
        if self.consumer is not None and self.kafka is None:
            raise ValueError("stages.consumer needs stages.kafka (it maps tags to offsets read from the topic)")
        if not self.enabled():
            raise ValueError("configure at least one stage under [stages]")
        return self

    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in STAGES if getattr(self, name) is not None)


class LoadConfig(_Model):
    count: int = Field(default=1000, ge=1, le=67_108_863)
    rate: float = Field(default=100.0, gt=0)
    background_rate: float = Field(default=0.0, ge=0)
    seed: int = 42
    drain_timeout: Duration = 60.0
    settle: float = Field(default=0.0, ge=0)


class LoadOverride(_Model):
    count: int | None = Field(default=None, ge=1, le=67_108_863)
    rate: float | None = Field(default=None, gt=0)
    background_rate: float | None = Field(default=None, ge=0)
    seed: int | None = None
    drain_timeout: Duration | None = None
    settle: float | None = Field(default=None, ge=0)


class SlaConfig(_Model):
    thresholds: tuple[str, ...] = DEFAULT_THRESHOLDS
    min_samples: int = Field(default=0, ge=0)


class Scenario(_Model):
    description: str = ""
    load: LoadOverride = LoadOverride()
    thresholds: tuple[str, ...] = ()


class ReportConfig(_Model):
    json_path: Path | None = Field(default=None, alias="json")
    junit: Path | None = None


BUILTIN_SCENARIOS = {
    # 100 canaries: the fewest that give the default p99 threshold enough samples; over 10 s, so a pipeline
    # that commits every second or so, and stalls now and then, still shows the rate it keeps up with
    "smoke": Scenario(description="100 canaries over 10 s: a quick yes/no", load=LoadOverride(count=100, rate=10)),
    "freshness": Scenario(
        description="1,000 canaries at 100/s over background load; freshness and loss",
        load=LoadOverride(count=1000, rate=100, background_rate=200),
    ),
    "throughput": Scenario(
        description="a sustained rate; delivered throughput must keep up",
        load=LoadOverride(count=10_000, rate=1000),
        thresholds=("throughput >= 800/s",),
    ),
}


class PipelineConfig(_Model):
    """The whole of pipeline.toml."""

    source: WebSocketSource | KafkaSource = Field(discriminator="type")
    messages: MessagesConfig = MessagesConfig()
    stages: Stages
    load: LoadConfig = LoadConfig()
    sla: SlaConfig = SlaConfig()
    scenarios: dict[str, Scenario] = {}
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _kafka_source_needs_topic(self) -> PipelineConfig:
        if isinstance(self.source, KafkaSource) and self.stages.kafka is None:
            raise ValueError("source.type = 'kafka' produces to stages.kafka.topic: configure [stages.kafka]")
        return self

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

    def thresholds_for(self, scenario: str | None) -> list[Threshold]:
        stages = self.stages.enabled()
        parsed = [parse_threshold(t, stages) for t in self.sla.thresholds]
        if scenario is not None:
            setting = f"scenarios.{scenario}.thresholds"
            parsed += [parse_threshold(t, stages, setting) for t in self.scenario(scenario).thresholds]
        return parsed

    def with_overrides(
        self,
        scenario: str | None,
        *,
        thresholds: tuple[str, ...] = (),
        **load_settings: Any,
    ) -> PipelineConfig:
        """A copy whose ``scenario`` (or base load, without one) also judges ``thresholds`` and uses
        the given load settings (count, rate, background_rate, drain_timeout, ...); None keeps a setting."""
        for text in thresholds:
            parse_threshold(text, self.stages.enabled(), "--threshold")
        given = {k: v for k, v in load_settings.items() if v is not None}
        try:
            load = LoadOverride.model_validate(given).model_dump(exclude_none=True)
        except ValidationError as exc:
            raise _config_error(exc, "overrides") from None
        if scenario is None:
            sla = self.sla.model_copy(update={"thresholds": (*self.sla.thresholds, *thresholds)})
            return self.model_copy(update={"load": self.load.model_copy(update=load), "sla": sla})
        base = self.scenario(scenario)
        patched = base.model_copy(
            update={"load": base.load.model_copy(update=load), "thresholds": (*base.thresholds, *thresholds)}
        )
        return self.model_copy(update={"scenarios": {**self.scenarios, scenario: patched}})

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able data with secrets masked (for reports)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        if self.stages.iceberg is not None:
            data["stages"]["iceberg"]["catalog"] = self.stages.iceberg.redacted_catalog()
        if self.stages.api is not None:
            data["stages"]["api"]["headers"] = {k: "***" for k in self.stages.api.headers}
        return data


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


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the field at ``loc`` (to suggest keys for a misspelt one)."""
    options: list[type[BaseModel]] = [PipelineConfig]
    for part in loc[:-1]:
        tagged = [m for m in options if m.model_fields.get("type") and m.model_fields["type"].default == part]
        if tagged:  # a discriminated union puts the tag in the location: source.websocket.port
            options = tagged
            continue
        field = next((m.model_fields[str(part)] for m in options if str(part) in m.model_fields), None)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", (annotation,))
        options = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return options[0] if len(options) == 1 else None


def _config_error(exc: ValidationError, file: str) -> ConfigError:
    errors = exc.errors()
    # A misspelt key also leaves its real one missing: report the misspelling, which carries the hint.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    setting = f"{file}: " + (".".join(str(p) for p in loc) or "(top level)")
    value = _masked(error.get("input"), loc)  # the value is printed: a misspelt secret key must not leak
    if error["type"] == "extra_forbidden":
        owner = _model_at(loc)
        known = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
        return ConfigError(setting, value, "is not a known setting", _choices(str(loc[-1]), known))
    if error["type"] == "missing":
        return ConfigError(setting, None, "is required", "add it (see compose/pipeline.toml)")
    message = error["msg"].removeprefix("Value error, ")
    return ConfigError(setting, value, message, "see the config reference in README.md")


def _is_secret(key: object) -> bool:
    return str(key) == "headers" or bool(_SECRET_KEY.search(str(key)))


def _masked(value: Any, loc: tuple[int | str, ...]) -> Any:
    """``value`` with secret-looking settings (by key, at ``loc`` or nested) replaced by ``***``."""
    if any(_is_secret(part) for part in loc):
        return "***"
    if isinstance(value, dict):
        return {k: _masked(v, (k,)) for k, v in value.items()}
    return value


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


def load_config(path: Path, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read, substitute and validate ``path``."""
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("--config", str(path), "does not exist", "pass -c path/to/pipeline.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", str(path), f"is not valid TOML ({exc})", "fix the syntax") from None
    data = _substitute_tree(raw, env, "")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path.name) from None
    for name in config.scenarios:
        config.thresholds_for(name)  # parse every threshold now, not halfway through a run
    config.thresholds_for(None)
    return config
