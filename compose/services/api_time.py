"""The query API's time form (API_TIME_FORMAT): how answers carry event_time, trade_time and ingest_time,
and how the start_time / end_time query parameters are written. One form for both, as real APIs do.

  ms         epoch milliseconds, an integer (the default)        1717243200123
  s          epoch seconds, an integer (the fraction cut off)    1717243200
  float_s    epoch seconds with a fraction, a JSON number         1717243200.123
  us         epoch microseconds, an integer                      1717243200123000
  ns         epoch nanoseconds, an integer                       1717243200123000000
  iso        ISO-8601 text with a UTC offset                     "2024-06-01T12:00:00.123000+00:00"
  iso_naive  ISO-8601 text without a zone, meaning UTC            "2024-06-01T12:00:00.123000"

Inside, a time is epoch microseconds (the table's resolution). A bound finer than that (ns) is rounded up:
a row at microsecond t is at or after a bound b exactly when t >= ceil(b), and before it when t < ceil(b).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from .common import env_choice
from .trades import MAX_EPOCH_MS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EPOCH_US = MAX_EPOCH_MS * 1000 + 999


class TimeForm(StrEnum):
    MS = "ms"
    S = "s"
    FLOAT_S = "float_s"
    US = "us"
    NS = "ns"
    ISO = "iso"
    ISO_NAIVE = "iso_naive"


# microseconds per unit of the integer forms coarser than nanoseconds
_PER_UNIT = {TimeForm.MS: 1000, TimeForm.S: 1_000_000, TimeForm.US: 1}

_HINTS = {
    TimeForm.MS: "must be epoch milliseconds",
    TimeForm.S: "must be epoch seconds (an integer)",
    TimeForm.FLOAT_S: "must be epoch seconds, e.g. 1717243200.123",
    TimeForm.US: "must be epoch microseconds",
    TimeForm.NS: "must be epoch nanoseconds",
    TimeForm.ISO: "must be ISO-8601 with a UTC offset, e.g. 2024-06-01T12:00:00.123+00:00",
    TimeForm.ISO_NAIVE: "must be ISO-8601 without a zone (UTC), e.g. 2024-06-01T12:00:00.123",
}


class TimeError(ValueError):
    """A query time not in the API's form or range; ``str(exc)`` is the hint."""


@dataclass(frozen=True, slots=True)
class TimeFormat:
    form: TimeForm = TimeForm.MS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TimeFormat:
        return cls(TimeForm(env_choice("API_TIME_FORMAT", TimeForm.MS, tuple(TimeForm), env=env)))

    @property
    def hint(self) -> str:
        return _HINTS[self.form]

    def sql(self, column: str) -> str:
        """A DuckDB expression of the timestamptz ``column`` in this form (the session's zone is UTC)."""
        us = f"epoch_us({column})"
        match self.form:
            case TimeForm.MS:
                # not epoch_ms(): it rounds 999.999 ms up to 1000, and the other forms cut the fraction off
                return f"{us} // 1000"
            case TimeForm.S:
                return f"{us} // 1000000"
            case TimeForm.FLOAT_S:
                return f"{us} / 1000000.0"
            case TimeForm.US:
                return us
            case TimeForm.NS:
                # HUGEINT: nanoseconds past 2262 overflow a BIGINT
                return f"CAST({us} AS HUGEINT) * 1000"
            case TimeForm.ISO:
                return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%f+00:00')"
            case TimeForm.ISO_NAIVE:
                return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%f')"

    def render(self, us: int) -> int | float | str:
        """Epoch microseconds in this form (what ``sql`` gives for the same time)."""
        match self.form:
            case TimeForm.ISO | TimeForm.ISO_NAIVE:
                moment = EPOCH + timedelta(microseconds=us)
                if self.form is TimeForm.ISO_NAIVE:
                    moment = moment.replace(tzinfo=None)
                return moment.isoformat(timespec="microseconds")
            case TimeForm.FLOAT_S:
                return us / 1_000_000
            case TimeForm.NS:
                return us * 1000
            case _:
                return us // _PER_UNIT[self.form]

    def parse(self, raw: str) -> int:
        """A query time in this form as epoch microseconds (rounded up); TimeError naming the form."""
        text = raw.strip()
        if self.form in (TimeForm.ISO, TimeForm.ISO_NAIVE):
            us = self._parse_iso(text)
        else:
            us = self._parse_number(text)
        if not 0 <= us <= MAX_EPOCH_US:
            raise TimeError(f"{self.hint}, between 1970 and 9999")
        return us

    def _parse_iso(self, text: str) -> int:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise TimeError(self.hint) from None
        zoned = moment.tzinfo is not None
        if zoned != (self.form is TimeForm.ISO):
            raise TimeError(self.hint)
        if not zoned:
            moment = moment.replace(tzinfo=UTC)
        return (moment - EPOCH) // timedelta(microseconds=1)

    def _parse_number(self, text: str) -> int:
        if self.form is not TimeForm.FLOAT_S:
            # plain digits only (int() would also take "+5", " 5" or "1_000"), and few enough to convert
            if not text.isascii() or not text.isdigit() or len(text) > 30:
                raise TimeError(self.hint)
            value = int(text)
            return -(-value // 1000) if self.form is TimeForm.NS else value * _PER_UNIT[self.form]
        try:
            seconds = Decimal(text)
        except InvalidOperation:
            raise TimeError(self.hint) from None
        if not seconds.is_finite():
            raise TimeError(self.hint)
        if not 0 <= seconds <= MAX_EPOCH_US / Decimal(1_000_000):  # before ceil: 1e999999999 is a number too
            raise TimeError(f"{self.hint}, between 1970 and 9999")
        return math.ceil(seconds * 1_000_000)
