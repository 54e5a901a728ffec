"""What passive runs, API response timing and the contract add to a run's report (carried by
:class:`~pipeline_check.verdict.events.RunFinished`). Plain values only: reporters import this module."""

from __future__ import annotations

from dataclasses import dataclass, field

BASIS = (
    "passive figures rest on the pipeline's own timestamps and clocks (broker times, snapshot commit times, "
    "event-time fields), compared with this machine's clock; an injected run times canaries on one clock instead"
)


@dataclass(frozen=True, slots=True)
class StageSeries:
    """One stage as a passive run sampled it."""

    stage: str
    type: str  # the probe type, which chose the sampler
    # active: new data during the window; stale: none, while data arrived upstream or waited for it;
    # idle: none anywhere up to it (nothing to judge freshness on)
    state: str
    series: dict[str, dict[str, float]]  # family -> p50/p95/p99/max/n of its samples
    last: dict[str, float]  # family -> the last sample
    samples: int
    failed: int  # looks that raised (noted)
    ahead_s: float  # the furthest a timestamp lay in the future of this machine's clock
    detail: str


@dataclass(frozen=True, slots=True)
class PassiveFigures:
    """A passive run: the window, and each sampled stage."""

    window_s: float
    interval_s: float
    stages: tuple[StageSeries, ...]
    skew: tuple[str, ...]  # clock skew seen (timestamps in the future)
    basis: str = BASIS


@dataclass(frozen=True, slots=True)
class ResponseFigures:
    """API response times: of the requests the probe or sampler made (what ``api.response`` judges), and,
    with ``load.api_concurrency``, of the load's queries before (idle) and while it ran (loaded)."""

    requests: dict[str, float]  # p50/p95/p99/max/n, seconds
    failed: int
    concurrency: int = 0
    idle: dict[str, float] = field(default_factory=dict)
    loaded: dict[str, float] = field(default_factory=dict)
    loaded_failed: int = 0
    degradation: float | None = None  # loaded p95 / idle p95
    # freshness while the load ran: e2e latency (injected) or each stage's freshness (passive)
    freshness_under_load: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Difference:
    """One way a stage breaks its contract."""

    stage: str
    subject: str  # "column price", "field p", "GET /nope (key: none)"
    expected: str
    actual: str

    @property
    def text(self) -> str:
        return f"{self.stage} {self.subject}: expected {self.expected}, found {self.actual}"


@dataclass(frozen=True, slots=True)
class ContractFigures:
    """The contract check: what was compared, what differs, what could not be checked."""

    differences: tuple[Difference, ...]
    checked: tuple[str, ...]  # "iceberg: 10 columns", "kafka: 20 records"
    not_applicable: tuple[str, ...] = ()  # parts this configuration cannot check (a key test without a key)
    unchecked: tuple[str, ...] = ()  # parts that had nothing to check (an empty topic)
