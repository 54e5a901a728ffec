"""What the probes asked of the system they watch: requests and bytes per kind, per stage.

A probe adds one request (and the bytes it moved) at each of its request sites, through the
:class:`ProbeLoad` its context carries; the run turns the counts into :class:`LoadFigures` per stage for the
reports (``probe load: api 2.1 req/s, iceberg 0.5 loads/s + 14 GETs/s, kafka 3.2 MB/s``) and the watch
exports them as Prometheus counters. The counts are what pipeline-check itself costs the pipeline it watches.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

# kind -> the unit a report writes after its rate; every request site counts under one of these
KINDS: Mapping[str, str] = {
    "requests": "req",  # HTTP requests to an API
    "catalog_loads": "loads",  # catalog requests: a metadata pointer read, a loadTable
    "object_gets": "GETs",  # file reads from the table's storage: metadata, manifest lists, manifests, data files
    "fetches": "fetches",  # Kafka fetch requests
    "admin": "admin req",  # Kafka admin requests: end offsets, a group's committed offsets
}


@dataclass(slots=True)
class ProbeLoad:
    """One stage's counter. Thread-safe: a probe may count from worker threads (an Iceberg poll reads files
    on several)."""

    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, nbytes: int = 0, calls: int = 1) -> None:
        """``calls`` requests of ``kind`` (one of :data:`KINDS`) that moved ``nbytes`` bytes."""
        if kind not in KINDS:
            raise ValueError(f"unknown probe load kind {kind!r}; known: {', '.join(KINDS)}")
        with self._lock:
            self.calls[kind] = self.calls.get(kind, 0) + calls
            self.bytes[kind] = self.bytes.get(kind, 0) + nbytes

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """Consistent copies of (calls, bytes) per kind."""
        with self._lock:
            return dict(self.calls), dict(self.bytes)

    def figures(self, seconds: float) -> LoadFigures:
        """The counts so far, over ``seconds`` of watching."""
        calls, nbytes = self.snapshot()
        return LoadFigures(seconds, calls, nbytes)


@dataclass(frozen=True, slots=True)
class LoadFigures:
    """One stage's probe load over a run: requests and bytes per kind, and the seconds they were made in."""

    seconds: float
    calls: Mapping[str, int]
    bytes: Mapping[str, int]

    def per_s(self, kind: str) -> float:
        return self.calls.get(kind, 0) / self.seconds if self.seconds > 0 else 0.0

    def bytes_per_s(self) -> float:
        return sum(self.bytes.values()) / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests(self) -> int:
        """Requests of every kind."""
        return sum(self.calls.values())

    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        """``0.5 loads/s + 14 GETs/s, 1.2 MB/s``: each kind's rate, then the bytes' ("idle" without a request)."""
        rates = [f"{_number(self.per_s(k))} {unit}/s" for k, unit in KINDS.items() if self.calls.get(k)]
        if not rates:
            return "no requests"
        return f"{' + '.join(rates)}, {byte_rate(self.bytes_per_s())}"


def byte_rate(per_s: float) -> str:
    """``3.2 MB/s``, ``14 kB/s``, ``120 B/s`` (decimal units, as network rates are written)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if per_s >= size:
            return f"{_number(per_s / size)} {unit}/s"
    return f"{per_s:.0f} B/s"


def _number(value: float) -> str:
    """Two significant figures below 10, whole numbers above: ``0.52``, ``2.1``, ``14``."""
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"
