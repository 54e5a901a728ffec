"""Field fidelity: does a stage hold what was sent? Decimal-exact, type-aware comparisons.

A stage's ``fields`` setting maps each field it holds to the sent field and a comparison, e.g.
``price = "p:decimal"``, ``side = "m:side"``, ``trade_time = "T:ms"``, ``symbol = "s"`` (exact).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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


def _millis(value: object) -> int | None:
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return (value - EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return _millis(dt.datetime.fromisoformat(value)) if not value.isdigit() else int(value)
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
    """``"p:decimal"`` -> ``("p", "decimal")``; a bare name compares exactly."""
    source, _, how = spec.partition(":")
    how = how or "exact"
    if not source or how not in COMPARISONS:
        raise ValueError(f"{spec!r}: expected SENT_FIELD[:{'|'.join(COMPARISONS)}]")
    return source, how


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
