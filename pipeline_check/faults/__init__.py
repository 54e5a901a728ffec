"""Network faults on the links of a pipeline (latency, cuts, resets, bandwidth), through Toxiproxy."""

from __future__ import annotations

from pipeline_check.faults.toxiproxy import Proxy, Toxic, Toxiproxy, ToxiproxyError, ToxiproxyServer

__all__ = ["Proxy", "Toxic", "Toxiproxy", "ToxiproxyError", "ToxiproxyServer"]
