"""Fidelity across the forms values come back in: numbers as floats or text, naive timestamps in a named zone,
decoded Avro (decimals, timestamp-micros, enums)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from fastavro import parse_schema

from pipeline_check.backends.kafka.codecs import AvroCodec, load_schema, to_comparable, trade_record
from pipeline_check.canary.fidelity import compare, parse_spec
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import Trade

MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z
NAIVE = dt.datetime(2023, 11, 14, 22, 13, 20, 123_000)  # the same instant, its zone left out
TRADE_SCHEMA = "compose/schemas/trade.avsc"


def differs(sent: object, held: object, how: str) -> bool:
    return bool(list(compare({"x": sent}, {"x": held}, {"x": f"x:{how}" if how else "x"})))


@pytest.mark.parametrize(
    ("sent", "held", "how", "same"),
    [
        (5, "5.0", "", True),  # a number sent compares as a number, whatever form came back
        (5, 5.0, "", True),
        (5, "5.5", "", False),
        (5, Decimal("5.00"), "", True),
        (5, "five", "", False),
        (5, True, "", False),  # a boolean is not the number 1
        (1, True, "", False),
        (2**62 + 7, float(2**62 + 7), "", False),  # a float lost the last digits: it says another number
        (2**62 + 7, str(2**62 + 7), "", True),
        ("BTCUSDT", "BTCUSDT", "", True),
        ("1.0", "1", "", False),  # text sent is compared as text
        ("65000.10000000", 65000.1, "decimal", True),
        ("65000.10000000", "6.50001E+4", "decimal", True),
        ("65000.10000001", 65000.10000001, "decimal", True),  # the float's shortest form holds these digits
        ("9999999999.99999999", 9999999999.99999999, "decimal", False),  # 18 digits do not fit a float
        ("1.5", "NaN", "decimal", False),
        ("1.5", "Infinity", "decimal", False),
        (MS, float(MS), "ms", True),
        (MS, "1.700000000123E+12", "ms", True),
        (MS, Decimal(MS), "ms", True),
        (MS, Decimal(MS) + Decimal("0.001"), "ms", False),  # a microsecond more is another time
        (MS, NAIVE, "ms", True),  # naive means UTC by default
        (MS, NAIVE.isoformat(), "ms", True),
        (MS, NAIVE + dt.timedelta(hours=1), "ms@Europe/Berlin", True),  # CET is UTC+1 in November
        (MS, (NAIVE + dt.timedelta(hours=1)).isoformat(), "ms@Europe/Berlin", True),
        (MS, NAIVE, "ms@Europe/Berlin", False),
        (MS, NAIVE - dt.timedelta(hours=5, minutes=30), "ms@-05:30", True),
        (MS, NAIVE.replace(tzinfo=dt.UTC), "ms@Asia/Tokyo", True),  # an aware time keeps its own offset
        (MS, "2023-11-14T22:13:20.123Z", "ms@Asia/Tokyo", True),
    ],
)
def test_values_compare_whatever_form_they_came_back_in(sent: object, held: object, how: str, same: bool) -> None:
    assert differs(sent, held, how) is not same


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("T:ms@Mars/Olympus", "is not a time zone"),
        ("T:ms@+25:00", "is not a time zone"),
        ("p:decimal@UTC", "only ms and time take a time zone"),
        ("p:fuzzy@UTC", "is not a comparison"),
    ],
)
def test_bad_zones_are_refused_at_load(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_decoded_avro_compares_decimal_exactly() -> None:
    """decimal(18,8) bytes, timestamp-micros and an enum, decoded and made comparable, against what was sent."""
    schema = load_schema(TRADE_SCHEMA)
    schema["fields"] = [*schema["fields"], {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A"]}}]
    parse_schema(schema)
    codec = AvroCodec(schema, 7)
    trade = Trade("CANARYUSDT", RunId(9).tag(1), "9999999999.99999999", "0.00000001", True, MS, seq=1)
    sent = {**trade.to_dict(), "kind": "A"}
    held = to_comparable(codec.decode(codec.encode({**trade_record(trade.to_dict()), "kind": "A"})))
    fields = {"p": "p:decimal", "q": "q:decimal", "T": "T:ms", "E": "E:ms", "t": "t", "kind": "kind", "m": "m"}
    assert list(compare(sent, held, fields)) == []
    rounded = {**held, "p": held["p"].quantize(Decimal("0.000001"))}
    assert [name for name, _, _ in compare(sent, rounded, fields)] == ["p"]
    micro = {**held, "T": held["T"] + Decimal("0.001")}
    assert [name for name, _, _ in compare(sent, micro, fields)] == ["T"]
