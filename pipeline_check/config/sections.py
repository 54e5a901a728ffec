"""The sections of pipeline.toml, each a model validated when the file loads: the source and stages (their
plugin's own settings model inside), messages, load, SLA, passive sampling, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline_check.config.errors import choices
from pipeline_check.core.durations import Duration, NonNegativeDuration
from pipeline_check.core.errors import ConfigError
from pipeline_check.core.plugins import PluginSettings
from pipeline_check.core.redaction import redact
from pipeline_check.reporting.registry import REPORTERS
from pipeline_check.verdict.thresholds import DEFAULT_THRESHOLDS

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


class BackgroundConfig(_Model):
    """``[load.background]``: what sends the background trades (``load.background_rate`` a second): the
    validator's own process beside the canaries (``local``), or Trogdor's agents (``trogdor``: a
    ProduceBench task per agent, ``pipeline_check.backends.trogdor``)."""

    engine: Literal["local", "trogdor"] = "local"
    coordinator: str | None = None  # trogdor: the coordinator's REST URL
    agents: tuple[str, ...] = ()  # trogdor: the agents' node names (a list, or one comma-separated string)
    bootstrap: str | None = None  # trogdor: Kafka as the agents reach it (default: the Kafka stage's)
    topic: str | None = None  # trogdor: where the trades go (default: the Kafka stage's topic)
    producer: dict[str, str] = Field(default_factory=dict)  # trogdor: the agents' producer settings

    @field_validator("agents", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return tuple(a.strip() for a in value.split(",") if a.strip()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _complete(self) -> BackgroundConfig:
        if self.engine == "trogdor" and (not self.coordinator or not self.agents):
            raise ValueError('engine "trogdor" needs `coordinator` (its URL) and `agents` (their names)')
        trogdor_only = (self.coordinator, self.agents, self.bootstrap, self.topic, self.producer)
        if self.engine == "local" and any(trogdor_only):
            raise ValueError('coordinator, agents, bootstrap, topic and producer belong to engine "trogdor"')
        return self


class LoadConfig(_Model):
    count: int = Field(default=1000, ge=1, le=67_108_863)
    rate: float = Field(default=100.0, gt=0)
    background_rate: float = Field(default=0.0, ge=0)
    background: BackgroundConfig = BackgroundConfig()  # what sends the background trades
    seed: int = 42
    drain_timeout: Duration = 60.0
    # how long probes keep watching after the last canary arrived, for late copies and retractions;
    # None: the larger of 2 s and twice the longest gap between deliveries at the last stage
    settle: NonNegativeDuration | None = None
    # concurrent API queries (symbols and windows drawn from the run) for the run's duration
    api_concurrency: int = Field(default=0, ge=0, le=64)
    # with faults: stop injecting this long after the last one is over (``count`` is then at most): a fault
    # whose target takes long to come back still has canaries after it, and a quick one no idle tail
    after_faults: NonNegativeDuration | None = None


class LoadOverride(_Model):
    count: int | None = Field(default=None, ge=1, le=67_108_863)
    rate: float | None = Field(default=None, gt=0)
    background_rate: float | None = Field(default=None, ge=0)
    seed: int | None = None
    drain_timeout: Duration | None = None
    settle: NonNegativeDuration | None = None
    api_concurrency: int | None = Field(default=None, ge=0, le=64)
    after_faults: NonNegativeDuration | None = None


class SlaConfig(_Model):
    thresholds: tuple[str, ...] = DEFAULT_THRESHOLDS
    min_samples: int = Field(default=0, ge=0)


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
                        setting, redact(value, key), "is not a known setting", choices(key, sorted(known))
                    )
        return data

    @model_serializer(mode="wrap")
    def _every_reporter(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        given: dict[str, Any] = handler(self)
        return {name: given.get(name) for name in REPORTERS.in_order()}

    def path(self, name: str) -> Path | None:
        """Where reporter ``name`` writes, when set."""
        return self.root.get(name)
