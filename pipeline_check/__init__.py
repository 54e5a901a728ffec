"""pipeline-check: prove a streaming data pipeline works end to end."""

from __future__ import annotations

__version__ = "0.1.0"
