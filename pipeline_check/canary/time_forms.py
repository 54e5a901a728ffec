"""Time forms: every way a stage writes an instant, read back to epoch milliseconds, and written into a query.

A stage may carry a time as epoch seconds, milliseconds, microseconds or nanoseconds (an integer, told
apart by magnitude: any instant from 1973 to the year 5138 has one reading), as float seconds, as
ISO-8601 text with an offset, or as ISO-8601 without one (read in the stage's ``time_zone``). What is read
keeps the precision its form carries (``unit_ms``): an integer of seconds says nothing finer than a
second, so an instant compared with it is compared at that precision.

Queries name the form they want with placeholders: ``{start_ms}`` ``{end_ms}``, ``{start_s}``,
``{start_float_s}``, ``{start_us}``, ``{start_ns}``, ``{start_iso}`` (UTC with its offset, the ``+``
URL-encoded as ``%2B``) and ``{start_iso_naive}`` (in ``time_zone``, no offset), each with its ``end_``
twin. A window ``[start, end)`` written in a form coarser than a millisecond is widened to whole units
(start rounded down, end up), so it still covers every instant asked for; :func:`covered` says which
window the query really asked.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import string
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# magnitudes of an integer epoch time from 1973 on: below 1e11 it counts seconds (until the year 5138)
_SECONDS_BELOW, _MILLIS_BELOW, _MICROS_BELOW = 1e11, 1e14, 1e17
# placeholder form -> milliseconds per unit of the integer it writes (None: not an integer form)
FORMS: dict[str, float | None] = {
    "ms": 1.0,
    "s": 1000.0,
    "float_s": None,
    "us": 0.001,
    "ns": 0.000001,
    "iso": None,
    "iso_naive": None,
}
# the fraction of a second in ISO text ("12:00:00.123+00:00" -> "123")
_FRACTION = re.compile(r"\d{2}:\d{2}:\d{2}[.,](\d+)")
TIME_PLACEHOLDERS = tuple(f"{edge}_{form}" for form in FORMS for edge in ("start", "end"))


@dataclass(frozen=True, slots=True)
class Instant:
    """An instant as a stage wrote it: epoch milliseconds, and the precision of the form (ms per unit)."""

    ms: float
    unit_ms: float

    def same_as(self, ms: float) -> bool:
        """Whether epoch millisecond ``ms`` is this instant at the precision it was written with."""
        return abs(self.ms - ms) < max(self.unit_ms, 1.0)


def zone(name: str) -> dt.tzinfo:
    """An IANA time zone or a fixed offset (``+02:00``, ``-0530``, ``Z``); ValueError naming the fix."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    try:
        offset = dt.datetime.strptime(name, "%z").utcoffset()
    except ValueError:
        offset = None
    if offset is None:
        raise ValueError(f"{name!r} is not a time zone; use an IANA name (Europe/Berlin) or an offset (+02:00)")
    return dt.timezone(offset)


def check_zone(name: str) -> str:
    """A ``time_zone`` setting, validated (for a pydantic ``AfterValidator``)."""
    zone(name)
    return name


def read_time(value: object, naive: dt.tzinfo = dt.UTC) -> Instant | None:
    """The instant ``value`` writes, in any form above (``naive``: the zone of ISO text without an offset);
    None for anything else (a boolean, text that is no time, a number that is not finite)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=naive)
        return Instant((moment - EPOCH) / dt.timedelta(milliseconds=1), 0.001)
    if isinstance(value, int):
        return _number(Decimal(value))
    if isinstance(value, float | Decimal):
        return _number(Decimal(str(value)))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            return _iso(text, naive)
        return _number(number)
    return None


def _per_ms(size: float) -> Decimal:
    """Units per millisecond of an epoch number of this size: seconds (0.001), milli-, micro- or nanoseconds."""
    if size < _SECONDS_BELOW:
        return Decimal("0.001")
    if size < _MILLIS_BELOW:
        return Decimal(1)
    return Decimal(1000) if size < _MICROS_BELOW else Decimal(1_000_000)


def _number(number: Decimal) -> Instant | None:
    """Exact arithmetic: nanoseconds since 1970 are beyond what a float holds to the unit."""
    if not number.is_finite():
        return None
    per = _per_ms(float(abs(number)))
    if number == number.to_integral_value() or per >= 1:  # an integer, or a fraction of a ms: the form's unit
        return Instant(float(number / per), float(1 / per))
    decimals = max(0, -int(number.as_tuple().exponent))  # float seconds: as precise as their digits
    return Instant(float(number * 1000), 1000 * 10.0**-decimals)


def _iso(text: str, naive: dt.tzinfo) -> Instant | None:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive)
    fraction = _FRACTION.search(text)
    unit = 1000 * 10.0 ** -len(fraction[1]) if fraction else 1000.0
    return Instant((moment - EPOCH) / dt.timedelta(milliseconds=1), unit)


def forms_in(template: str) -> set[str]:
    """The forms of the time placeholders a query template uses (``{start_iso}`` -> ``iso``)."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    return {name.split("_", 1)[1] for name in names if name in TIME_PLACEHOLDERS}


def coarsest_unit_ms(forms: Iterable[str]) -> float:
    """Milliseconds a window written in ``forms`` is rounded to (1 for forms as fine as a millisecond)."""
    return max([1.0, *(FORMS[f] or 1.0 for f in forms)])


def covered(start_ms: int, end_ms: int, unit_ms: float) -> tuple[int, int]:
    """The window ``[start, end)`` a query really asks when written in units of ``unit_ms``: start rounded
    down, end rounded up."""
    unit = max(1, int(unit_ms))
    return start_ms // unit * unit, -(-end_ms // unit) * unit


def placeholders(start_ms: int, end_ms: int, forms: Iterable[str], naive: dt.tzinfo = dt.UTC) -> dict[str, str]:
    """The values of the ``start_*`` and ``end_*`` placeholders of ``forms`` for the window ``[start, end)``,
    widened to whole units of the coarsest form asked (every placeholder writes the same window)."""
    wanted = set(forms)
    start, end = covered(start_ms, end_ms, coarsest_unit_ms(wanted))
    values: dict[str, str] = {}
    for form in wanted:
        values[f"start_{form}"] = write_time(start, form, naive)
        values[f"end_{form}"] = write_time(end, form, naive)
    return values


def write_time(ms: int, form: str, naive: dt.tzinfo = dt.UTC) -> str:
    """Epoch millisecond ``ms`` in ``form`` (a whole millisecond: every coarser form's bound is rounded by
    :func:`covered` first), as it goes into a URL."""
    if form == "ms":
        return str(ms)
    if form == "s":
        return str(math.floor(ms / 1000))
    if form == "float_s":
        return f"{Decimal(ms) / 1000:f}"
    if form == "us":
        return str(ms * 1000)
    if form == "ns":
        return str(ms * 1_000_000)
    moment = EPOCH + dt.timedelta(milliseconds=ms)
    if form == "iso":
        return quote(moment.isoformat(timespec="milliseconds"), safe=":")
    if form == "iso_naive":
        return moment.astimezone(naive).replace(tzinfo=None).isoformat(timespec="milliseconds")
    raise ValueError(f"{form!r} is not a time form ({', '.join(FORMS)})")
