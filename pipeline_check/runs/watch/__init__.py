"""``pipeline-check watch``: a continuous canary with Prometheus metrics (see :mod:`.runner`)."""

from __future__ import annotations

from pipeline_check.runs.watch.runner import Watch, WatchSettings, run_watch
from pipeline_check.runs.watch.window import WindowVerdict

__all__ = ["Watch", "WatchSettings", "WindowVerdict", "run_watch"]
