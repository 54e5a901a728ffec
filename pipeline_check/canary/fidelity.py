"""Field fidelity: does a stage hold what was sent? Decimal-exact, type-aware comparisons.

A stage's ``fields`` setting maps each field it holds to the sent field and a comparison, e.g.
``price = "p:decimal"``, ``side = "m:side"``, ``trade_time = "T:ms"``, ``symbol = "s"`` (exact).

Numbers compare as numbers whatever form they came back in (an int, a float, a decimal text such as
``"65000.10"`` or ``"6.5E+4"``): a float equals what it says, so one that lost digits differs. A timestamp
without an offset (a naive datetime, ISO text without a zone) is read as UTC unless the comparison names the
zone it is in: ``trade_time = "T:ms@America/New_York"`` (an IANA name, or a fixed offset such as ``+02:00``).
``T:time`` takes the held instant in any time form (epoch s/ms/µs/ns, float seconds, ISO-8601) and compares
it at the precision that form carries.
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

from pipeline_check.canary.time_forms import read_time
from pipeline_check.canary.time_forms import zone as _zone

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field of one canary that a stage holds differently from what was injected; for a row that
    changed after the stage first showed it, the value it showed before and how long after."""

    stage: str
    tag: int
    field: str
    expected: str
    actual: str
    previous: str | None = None  # the value before this change (the sent one's, where it matched)
    changed_after_s: float | None = None  # seconds after the stage first showed the row; None: as first shown

    @property
    def text(self) -> str:
        """``price expected '1.5', got '1.6'``; for a later change ``(changed from '1.5' 2.1s after ...)``."""
        line = f"{self.field} expected {self.expected}, got {self.actual}"
        if self.changed_after_s is None:
            return line
        return f"{line} (changed from {self.previous} {self.changed_after_s:.1f}s after it was first seen)"


def _exact(sent: object, held: object) -> bool:
    if isinstance(sent, bool) is not isinstance(held, bool):  # True == 1 in Python, not in data
        return str(sent) == str(held)
    if sent == held or str(sent) == str(held):
        return True
    sent_number = _number(sent) if _is_number(sent) else None
    return sent_number is not None and sent_number == _number(held)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _number(value: object) -> Decimal | None:
    """A finite number as an exact Decimal: an int, a float (the value it holds, in its shortest form), a Decimal
    or a decimal text; None for anything else (a boolean is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _decimal(sent: object, held: object) -> bool:
    if sent == held or str(sent) == str(held):  # the same text is the same number (the common case)
        return True
    number = _number(sent)
    return number is not None and number == _number(held)


def _side(sent: object, held: object) -> bool:
    """Binance ``m`` (buyer is maker) means the aggressor sold."""
    return isinstance(sent, bool) and str(held).lower() == ("sell" if sent else "buy")


def _millis(value: object, naive: dt.tzinfo = dt.UTC) -> float | None:
    """Epoch milliseconds of a timestamp (``naive`` is the zone of one without an offset), a number (epoch ms
    as an int, a float, a Decimal or a decimal text) or ISO-8601 text."""
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=naive)
        return (value - EPOCH) / dt.timedelta(milliseconds=1)
    if isinstance(value, str):
        text = _number(value)
        if text is not None:
            return float(text)
        try:
            return _millis(dt.datetime.fromisoformat(value), naive)
        except ValueError:
            return None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        ms = float(value)
        return ms if math.isfinite(ms) else None
    return None


def _ms(sent: object, held: object, naive: dt.tzinfo = dt.UTC) -> bool:
    """Epoch milliseconds against a timestamp, epoch ms or ISO-8601 text."""
    held_ms = _millis(held, naive)
    return held_ms is not None and held_ms == _millis(sent)


def _time(sent: object, held: object, naive: dt.tzinfo = dt.UTC) -> bool:
    """Epoch milliseconds against an instant in any time form (:mod:`~pipeline_check.canary.time_forms`),
    at the precision that form carries: epoch seconds hold the sent second, float seconds their digits."""
    sent_ms = _millis(sent)
    instant = read_time(held, naive)
    return sent_ms is not None and instant is not None and instant.same_as(sent_ms)


COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "exact": _exact,
    "decimal": _decimal,
    "side": _side,
    "ms": _ms,
    "time": _time,
}


@functools.lru_cache(maxsize=256)
def parse_spec(spec: str) -> tuple[str, str]:
    """``"p:decimal"`` -> ``("p", "decimal")``; a bare name compares exactly. ``ValueError`` names what
    is wrong (the config loader turns it into a one-line error naming the setting)."""
    source, _, how = spec.partition(":")
    how = how or "exact"
    if not source:
        raise ValueError(f"{spec!r} names no sent field; write SENT_FIELD[:COMPARISON]")
    comparison(how)
    return source, how


@functools.lru_cache(maxsize=256)
def comparison(how: str) -> Callable[[object, object], bool]:
    """The comparison a spec names after its colon: ``decimal``, ``ms``, ``ms@Europe/Berlin`` ..."""
    name, at, zone_name = how.partition("@")
    if name not in COMPARISONS:
        raise ValueError(f"{name!r} is not a comparison ({', '.join(COMPARISONS)}); write SENT_FIELD[:COMPARISON]")
    if not at:
        return COMPARISONS[name]
    if name not in ("ms", "time"):
        raise ValueError(f"{how!r}: only ms and time take a time zone (ms@ZONE: timestamps stored without an offset)")
    return functools.partial(_ms if name == "ms" else _time, naive=_zone(zone_name))


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
        elif not comparison(how)(expected, held[name]):
            yield name, repr(expected), repr(held[name])
