"""The Avro codec in the Confluent wire format, against a fake in-memory registry."""

from __future__ import annotations

import datetime as dt
import json
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline_check.backends.kafka.codecs import (
    AvroCodec,
    DecodeError,
    EncodeError,
    RegistryError,
    UnknownSchemaError,
    WireFormatError,
    load_schema,
    to_comparable,
    trade_record,
)
from pipeline_check.backends.kafka.codecs.schema_registry import SchemaRegistryClient
from pipeline_check.canary.fidelity import compare
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.core.errors import ConfigError

TRADE_AVSC = Path(__file__).parents[2] / "compose" / "schemas" / "trade.avsc"
TRADE_ID = 7
MAX_DECIMAL = "9999999999.99999999"  # decimal(18, 8): 10 integer digits, 8 decimals
FIELDS = {
    "e": "e",
    "E": "E:ms",
    "s": "s",
    "t": "t",
    "p": "p:decimal",
    "q": "q:decimal",
    "T": "T:ms",
    "m": "m",
    "M": "M",
}


class FakeRegistry:
    """Schemas by id, counting lookups; an unknown id answers like Confluent (40403)."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = {i: json.dumps(s) for i, s in schemas.items()}
        self.lookups: list[int] = []

    def schema_by_id(self, schema_id: int) -> str:
        self.lookups.append(schema_id)
        if schema_id not in self.schemas:
            raise RegistryError(
                "http://fake", f"schema id {schema_id}", "Schema not found", status=404, error_code=40403
            )
        return self.schemas[schema_id]


@pytest.fixture(scope="module")
def trade_schema() -> dict[str, Any]:
    return load_schema(TRADE_AVSC)


@pytest.fixture
def codec(trade_schema: dict[str, Any]) -> AvroCodec:
    return AvroCodec(trade_schema, TRADE_ID)


def with_field(schema: dict[str, Any], **field: Any) -> dict[str, Any]:
    return {**schema, "fields": [*schema["fields"], field]}


def canary(
    price: str = "65000.10000000", quantity: str = "0.00100000", time_ms: int = 1_750_000_000_123
) -> dict[str, Any]:
    trade = TradeFactory(RunId.new(now=1_750_000_000.0), seed=3, count=1, symbols=("CANARYUSDT",)).canary(0, time_ms)
    return {**trade.to_dict(), "p": price, "q": quantity}


def test_the_trade_schema_carries_every_binance_field(trade_schema: dict[str, Any]) -> None:
    assert [f["name"] for f in trade_schema["fields"]] == list(canary())
    kinds = {f["name"]: f["type"] for f in trade_schema["fields"]}
    assert kinds["p"] == kinds["q"] == {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}
    assert kinds["E"] == kinds["T"] == {"type": "long", "logicalType": "timestamp-micros"}


def test_frame_is_magic_byte_big_endian_id_then_body(codec: AvroCodec) -> None:
    data = codec.encode(trade_record(canary()))
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5]) == (TRADE_ID,)
    assert codec.decode(data)["s"] == "CANARYUSDT"


def test_canaries_round_trip_exactly(codec: AvroCodec) -> None:
    factory = TradeFactory(RunId.new(now=1_750_000_000.0), seed=11, count=500, symbols=("CANARYUSDT",))
    for seq in range(500):
        sent = factory.canary(seq, 1_750_000_000_000 + seq).to_dict()
        held = to_comparable(codec.decode(codec.encode(trade_record(sent))))
        assert list(compare(sent, held, FIELDS)) == [], seq
        assert held["p"] == Decimal(sent["p"]) and held["T"] == sent["T"] and held["t"] == sent["t"]


@pytest.mark.parametrize(
    "price",
    [MAX_DECIMAL, "-" + MAX_DECIMAL, "0.00000001", "-0.00000001", "0.00000000", "1234567890.12345678", "65000.1"],
)
def test_decimal_18_8_keeps_every_digit(codec: AvroCodec, price: str) -> None:
    held = codec.decode(codec.encode(trade_record(canary(price=price, quantity=price))))
    assert held["p"] == held["q"] == Decimal(price)
    assert held["p"].as_tuple().exponent == -8  # read back at the schema's scale: 8 decimals, as Binance sends
    assert f"{held['p']:f}" == f"{Decimal(price):.8f}"


@pytest.mark.parametrize(
    ("price", "why"),
    [
        ("10000000000.00000000", "more than 18 digits"),
        ("1E+10", "more than 18 digits"),  # one digit carried, 19 at scale 8: fastavro alone would let it pass
        ("-10000000000", "more than 18 digits"),
        ("0.123456789", "more than 8 decimals"),
    ],
)
def test_decimals_outside_18_8_are_refused(codec: AvroCodec, price: str, why: str) -> None:
    with pytest.raises(EncodeError, match=rf"field 'p': .*{why}"):
        codec.encode(trade_record(canary(price=price)))


def test_microsecond_timestamps_round_trip_and_compare_exactly(codec: AvroCodec) -> None:
    at = dt.datetime(2025, 6, 15, 15, 6, 40, 123456, tzinfo=dt.UTC)
    record = {**trade_record(canary()), "E": at}
    held = codec.decode(codec.encode(record))
    assert held["E"] == at
    assert to_comparable(held)["E"] == Decimal("1750000000123.456")  # not rounded to ...123 ms
    assert list(compare({"E": 1_750_000_000_123}, to_comparable(held), {"E": "E:ms"})) != []


def test_timestamps_before_the_epoch_compare_exactly(codec: AvroCodec) -> None:
    at = dt.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=dt.UTC)
    assert to_comparable({"E": at})["E"] == Decimal("-0.5")
    assert to_comparable({"E": dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)})["E"] == -1


def test_a_corrupted_price_is_a_fidelity_difference(codec: AvroCodec) -> None:
    sent = canary()
    held = to_comparable(codec.decode(codec.encode(trade_record({**sent, "p": "65000.10000001"}))))
    assert list(compare(sent, held, FIELDS)) == [("p", "'65000.10000000'", "Decimal('65000.10000001')")]


def test_enums_nested_records_and_arrays_become_comparable() -> None:
    schema = {
        "type": "record",
        "name": "Fill",
        "fields": [
            {"name": "side", "type": {"type": "enum", "name": "Side", "symbols": ["BUY", "SELL"]}},
            {
                "name": "legs",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Leg",
                        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
                    },
                },
            },
        ],
    }
    codec = AvroCodec(schema, 1)
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    held = to_comparable(codec.decode(codec.encode({"side": "SELL", "legs": [{"at": at}]})))
    assert held == {"side": "SELL", "legs": [{"at": 1_735_689_600_000}]}
    assert list(compare({"m": True}, held, {"side": "m:side"})) == []


def test_wrong_magic_byte_is_named(codec: AvroCodec) -> None:
    with pytest.raises(WireFormatError, match=r"first byte b'\{' \(JSON\?\) is not the Confluent magic byte 0"):
        codec.decode(json.dumps(canary()).encode())
    with pytest.raises(WireFormatError, match="magic byte 0"):
        codec.decode(b"\x01" + codec.encode(trade_record(canary()))[1:])


def test_a_frame_shorter_than_its_header_is_refused(codec: AvroCodec) -> None:
    with pytest.raises(WireFormatError, match="3 bytes is too short"):
        codec.decode(b"\x00\x00\x00")


def test_unknown_id_without_registry_names_the_local_id(codec: AvroCodec) -> None:
    data = codec.encode(trade_record(canary()))
    with pytest.raises(
        UnknownSchemaError, match=r"schema id 8 .*no schema registry is configured.*local schema has id 7"
    ):
        codec.decode(data[:1] + struct.pack(">I", 8) + data[5:])


def test_unknown_id_in_the_registry(trade_schema: dict[str, Any]) -> None:
    registry = FakeRegistry({})
    codec = AvroCodec(trade_schema, TRADE_ID, registry)
    data = codec.encode(trade_record(canary()))
    with pytest.raises(UnknownSchemaError, match=r"schema id 99 .*unknown to the registry.*Schema not found"):
        codec.decode(data[:1] + struct.pack(">I", 99) + data[5:])
    assert registry.lookups == [99]


def test_other_registry_failures_are_not_hidden(trade_schema: dict[str, Any]) -> None:
    class Down:
        def schema_by_id(self, schema_id: int) -> str:
            raise RegistryError("http://down", f"schema id {schema_id}", "the registry does not answer")

    codec = AvroCodec(trade_schema, TRADE_ID, Down())
    data = codec.encode(trade_record(canary()))
    with pytest.raises(RegistryError, match="does not answer"):
        codec.decode(data[:1] + struct.pack(">I", 3) + data[5:])


def test_an_older_writer_schema_is_looked_up_once_and_resolved(trade_schema: dict[str, Any]) -> None:
    v2 = with_field(trade_schema, name="venue", type="string", default="binance")
    registry = FakeRegistry({1: trade_schema, 2: v2})
    old = AvroCodec(trade_schema, 1)
    new = AvroCodec(v2, 2, registry)
    frames = [old.encode(trade_record(canary(time_ms=1_750_000_000_000 + i))) for i in range(3)]
    held = [new.decode(f) for f in frames]
    assert [h["venue"] for h in held] == ["binance"] * 3  # the reader's default fills the field v1 lacks
    assert to_comparable(held[2])["T"] == 1_750_000_000_002
    assert registry.lookups == [1]  # cached after the first frame; the codec's own id is never looked up
    assert new.decode(new.encode({**trade_record(canary()), "venue": "x"}))["venue"] == "x"
    assert registry.lookups == [1]


def test_a_writer_schema_the_reader_cannot_resolve_is_a_decode_error(trade_schema: dict[str, Any]) -> None:
    v2 = with_field(trade_schema, name="venue", type="string")  # no default: v1 data cannot fill it
    codec = AvroCodec(v2, 2, FakeRegistry({1: trade_schema}))
    with pytest.raises(
        DecodeError, match="writer schema id 1: SchemaResolutionError: No default value for field venue"
    ):
        codec.decode(AvroCodec(trade_schema, 1).encode(trade_record(canary())))


def test_a_body_that_does_not_match_is_a_decode_error(codec: AvroCodec) -> None:
    data = codec.encode(trade_record(canary()))
    with pytest.raises(DecodeError, match="writer schema id 7"):
        codec.decode(data[:-3])
    with pytest.raises(DecodeError, match="2 bytes left after the record"):
        codec.decode(data + b"\x00\x00")
    with pytest.raises(DecodeError, match="UnicodeDecodeError"):
        codec.decode(data[:5] + b"\x04\xff\xfe" + data[8:])  # the event type string's bytes are not UTF-8


def test_a_record_that_does_not_fit_names_the_field(codec: AvroCodec) -> None:
    with pytest.raises(EncodeError, match=r"Trade\.m\) is None expected boolean"):
        codec.encode({**trade_record(canary()), "m": None})  # fastavro's writer alone would write false
    with pytest.raises(EncodeError, match=r"Trade\.t is <1\.5> of type <class 'float'> expected long"):
        codec.encode({**trade_record(canary()), "t": 1.5})  # ... and 1 here
    with pytest.raises(EncodeError, match=r"Trade\.p is <65000\.1> of type <class 'str'>"):
        codec.encode({**trade_record(canary()), "p": "65000.1"})
    with pytest.raises(EncodeError, match="more fields than the schema specifies: side"):
        codec.encode({**trade_record(canary()), "side": "buy"})
    record = trade_record(canary())
    del record["M"]
    with pytest.raises(EncodeError, match=r"Trade\.M\) is None expected boolean"):
        codec.encode(record)


def test_schema_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^avro\.schema='.*missing\.avsc' \(str\): cannot read the schema file"):
        load_schema(tmp_path / "missing.avsc")
    bad = tmp_path / "bad.avsc"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        load_schema(bad, setting="stages.kafka.schema")
    bad.write_text('{"type": "record", "name": "T", "fields": [{"name": "a", "type": "money"}]}')
    with pytest.raises(ConfigError, match=r"invalid Avro schema: .*money"):
        load_schema(bad)
    bad.write_text('"string"')
    with pytest.raises(ConfigError, match="not an Avro record schema"):
        load_schema(bad)


def test_schema_text_must_be_json() -> None:
    with pytest.raises(ConfigError, match=r"^avro\.schema='\{nope' \(str\): not JSON"):
        AvroCodec("{nope", 1)


@pytest.mark.parametrize("schema_id", [-1, 2**31, True, "7"])
def test_schema_ids_are_checked(trade_schema: dict[str, Any], schema_id: Any) -> None:
    with pytest.raises(ConfigError, match=r"avro\.schema_id=.*not a schema id \(0\.\.2147483647\)"):
        AvroCodec(trade_schema, schema_id)


def test_the_schema_text_a_registry_takes(codec: AvroCodec, trade_schema: dict[str, Any]) -> None:
    sent: list[dict[str, Any]] = []

    def registry(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"id": 7})

    client = SchemaRegistryClient("http://registry.test")
    client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(registry))
    assert client.register("trades-value", codec.schema) == 7
    schema_text = sent[0]["schema"]
    assert json.loads(schema_text) == trade_schema
    assert "\n" not in schema_text
