"""Field fidelity: does a stage hold what was sent? Decimal-exact, type-aware comparisons.

A stage's ``fields`` setting maps each field it holds to the sent field and a comparison, e.g.
``price = "p:decimal"``, ``side = "m:side"``, ``trade_time = "T:ms"``, ``symbol = "s"`` (exact).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field of one canary that a stage holds differently from what was injected."""

    stage: str
    tag: int
    field: str
    expected: str
    actual: str


def _exact(sent: object, held: object) -> bool:
    return sent == held or str(sent) == str(held)


def _decimal(sent: object, held: object) -> bool:
    if sent == held or str(sent) == str(held):  # the same text is the same number (the common case)
        return True
    try:
        return Decimal(str(sent)) == Decimal(str(held))
    except InvalidOperation:
        return False


def _side(sent: object, held: object) -> bool:
    """Binance ``m`` (buyer is maker) means the aggressor sold."""
    return isinstance(sent, bool) and str(held).lower() == ("sell" if sent else "buy")


def _millis(value: object) -> float | None:
    """Epoch milliseconds of a timestamp, a number (an epoch-ms float compares as the number it is) or
    ISO-8601 text."""
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (value - EPOCH) / dt.timedelta(milliseconds=1)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return float(value) if value.replace(".", "", 1).isdigit() else _millis(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _ms(sent: object, held: object) -> bool:
    """Epoch milliseconds against a timestamp, epoch ms or ISO-8601 text."""
    held_ms = _millis(held)
    return held_ms is not None and held_ms == _millis(sent)


COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "exact": _exact,
    "decimal": _decimal,
    "side": _side,
    "ms": _ms,
}


@functools.lru_cache(maxsize=256)
def parse_spec(spec: str) -> tuple[str, str]:
    """``"p:decimal"`` -> ``("p", "decimal")``; a bare name compares exactly. ``ValueError`` names what
    is wrong (the config loader turns it into a one-line error naming the setting)."""
    source, _, how = spec.partition(":")
    how = how or "exact"
    if not source:
        raise ValueError(f"{spec!r} names no sent field; write SENT_FIELD[:COMPARISON]")
    if how not in COMPARISONS:
        raise ValueError(f"{how!r} is not a comparison ({', '.join(COMPARISONS)}); write SENT_FIELD[:COMPARISON]")
    return source, how


def check_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """A ``fields`` setting, validated (for a pydantic ``AfterValidator``)."""
    for spec in fields.values():
        parse_spec(spec)
    return dict(fields)


# a stage's ``fields`` setting: its field -> "SENT_FIELD[:comparison]", checked when the config loads
Fields = Annotated[dict[str, str], AfterValidator(check_fields)]


def compare(
    sent: Mapping[str, object], held: Mapping[str, object], fields: Mapping[str, str]
) -> Iterator[tuple[str, str, str]]:
    """``(field, expected, actual)`` for every configured field that differs (or is missing)."""
    for name, spec in fields.items():
        source, how = parse_spec(spec)
        expected = sent.get(source)
        if name not in held:
            yield name, repr(expected), "<missing>"
        elif not COMPARISONS[how](expected, held[name]):
            yield name, repr(expected), repr(held[name])
