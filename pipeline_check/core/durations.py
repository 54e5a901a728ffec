"""Durations as users write them: ``500ms``, ``30s``, ``2m`` (or a plain number of seconds in TOML)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$")
HINT = "write it with a unit: 500ms, 30s or 2m"


def parse_duration(text: str) -> float | None:
    """Seconds of ``text`` (``"500ms"``, ``"30s"``, ``"2m"``), or None when it is not a duration."""
    match = _DURATION.match(text)
    return None if match is None else float(match[1]) * UNITS[match[2]]


def duration(value: object) -> float:
    """A config value (number of seconds or duration text) -> seconds; ``ValueError`` otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (seconds := parse_duration(value)) is not None:
        return seconds
    raise ValueError(f"expected a duration such as 500ms, 30s or 2m ({HINT})")


# settings types: a duration > 0, and one that may be 0
Duration = Annotated[float, BeforeValidator(duration), Field(gt=0)]
NonNegativeDuration = Annotated[float, BeforeValidator(duration), Field(ge=0)]
