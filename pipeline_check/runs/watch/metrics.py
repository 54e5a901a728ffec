"""The watch's Prometheus metrics, on a registry of their own (never the process-wide default).

Counters move as canaries are injected, first seen at a stage and closed (delivered on time or lost);
histograms take each first sighting's latency; gauges carry the last window evaluation; the probes' own
requests and bytes (what watching costs the pipeline) are read from their counters at each scrape. A check that
the window could not judge (inconclusive, not applicable) reads ``NaN`` in ``pipeline_check_sla_ok``,
so an alert on ``== 0`` fires on breaches only, and so does an unjudged availability (no canary of the
window has reached its loss deadline yet).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.probe_load import KINDS, ProbeLoad
from pipeline_check.verdict.results import CheckResult
from pipeline_check.verdict.status import Status

# seconds: from a broker hop (milliseconds) to a table commit a few minutes late
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WatchMetrics:
    """Every metric the watch exposes; ``stages`` in route order, ``final`` where freshness is measured."""

    def __init__(self, stages: Iterable[str], final: str, checks: Iterable[str]) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # resident memory and CPU of the watch itself, over days
        stages = tuple(stages)
        self.injected = Counter(
            "pipeline_check_canaries_injected_total", "Canaries injected at the source.", registry=registry
        )
        delivered = Counter(
            "pipeline_check_canaries_delivered_total",
            "Canaries first seen at a stage (late ones included).",
            ["stage"],
            registry=registry,
        )
        lost = Counter(
            "pipeline_check_canaries_lost_total",
            "Canaries not delivered at the final stage by their loss deadline, by the last stage they reached.",
            ["stage_reached"],
            registry=registry,
        )
        self.duplicated = Counter(
            "pipeline_check_canaries_duplicated_total",
            "Canaries seen with more than one copy at some stage.",
            registry=registry,
        )
        self.late = Counter(
            "pipeline_check_canaries_late_total",
            "Canaries delivered at the final stage after being counted lost.",
            registry=registry,
        )
        hop = Histogram(
            "pipeline_check_stage_latency_seconds",
            "Seconds from a canary's first sighting at the upstream stage (or its injection) to this stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram(
            "pipeline_check_e2e_latency_seconds",
            f"Seconds from injection to the first sighting at the final stage ({final}).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        sla_ok = Gauge(
            "pipeline_check_sla_ok",
            "1 when the check passed over the last window, 0 when it failed, NaN when it could not be judged.",
            ["check"],
            registry=registry,
        )
        self.availability = Gauge(
            "pipeline_check_availability",
            "Canaries of the window delivered on time over those injected (NaN: none has reached its deadline).",
            registry=registry,
        )
        self.window_canaries = Gauge(
            "pipeline_check_window_canaries",
            "Canaries the last window evaluation judged.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "pipeline_check_canaries_in_flight",
            "Canaries injected whose loss deadline has not passed yet.",
            registry=registry,
        )
        probe_failures = Counter(
            "pipeline_check_probe_failures_total",
            "Probes that stopped on an error (the watch starts a new set under a new run id).",
            ["stage"],
            registry=registry,
        )
        self.injection_failures = Counter(
            "pipeline_check_injection_failures_total",
            "Sends the source refused (the injector is started afresh).",
            registry=registry,
        )
        # children bound once: a label lookup per canary would cost more than the canary's bookkeeping
        self.delivered = {stage: delivered.labels(stage) for stage in stages}
        self.lost = {stage: lost.labels(stage) for stage in (SOURCE, *stages) if stage != final}
        self.hop = {stage: hop.labels(stage) for stage in stages}
        self.probe_failures = {stage: probe_failures.labels(stage) for stage in stages}
        self.sla_ok = {check: sla_ok.labels(check) for check in checks}
        for gauge in (self.availability, *self.sla_ok.values()):
            gauge.set(math.nan)
        # one counter per stage for the whole watch: every generation's probe of a stage adds to it
        self.probe_load = {stage: ProbeLoad() for stage in stages}
        registry.register(ProbeLoadCollector(self.probe_load))

    def judged(self, results: Iterable[CheckResult], availability: float, canaries: int) -> None:
        """Publish one window evaluation."""
        for result in results:
            self.sla_ok[result.threshold].set(_ok(result.status))
        self.availability.set(availability)
        self.window_canaries.set(canaries)


class ProbeLoadCollector(Collector):
    """``pipeline_check_probe_requests_total`` and ``pipeline_check_probe_bytes_total`` by stage and kind, read
    from the probes' counters when scraped (no work per request)."""

    def __init__(self, loads: Mapping[str, ProbeLoad]) -> None:
        self.loads = loads

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "pipeline_check_probe_requests",
            "Requests the probes made to the system they watch (kind: requests, catalog_loads, object_gets, "
            "fetches, admin).",
            labels=["stage", "kind"],
        )
        moved = CounterMetricFamily(
            "pipeline_check_probe_bytes",
            "Bytes the probes' requests moved, by stage and kind.",
            labels=["stage", "kind"],
        )
        for stage, load in self.loads.items():
            calls, nbytes = load.snapshot()
            for kind in KINDS:
                if kind in calls:
                    requests.add_metric([stage, kind], calls[kind])
                    moved.add_metric([stage, kind], nbytes.get(kind, 0))
        yield requests
        yield moved


def _ok(status: Status) -> float:
    if status == Status.PASSED:
        return 1.0
    if status == Status.FAILED:
        return 0.0
    return math.nan
