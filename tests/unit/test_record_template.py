"""``[source.record]``: canaries in the pipeline's own Avro or JSON shape, checked when the config loads and bound
to the writer schema when the injector starts; fidelity compares what the template put in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.kafka.codecs import AvroCodec, to_comparable
from pipeline_check.backends.kafka.injector import KafkaInjector, KafkaSettings
from pipeline_check.backends.kafka.template import flat
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import Trade
from pipeline_check.config import load_config
from pipeline_check.core.clock import Clock
from pipeline_check.core.errors import ConfigError, ExitCode
from tests.support.foreign import FOREIGN, TEMPLATE

TRADE = Trade("CANARYUSDT", RunId(5).tag(3), "65000.12345678", "0.00000001", True, 1_700_000_000_123, seq=3)


def settings(tmp_path: Path, template: str = TEMPLATE, schema: dict[str, Any] | None = FOREIGN) -> KafkaSettings:
    kafka = 'bootstrap = "127.0.0.1:9092"\ntopic = "executions"\ntag_field = "exec_ref"\n'
    kafka += 'tag_pattern = "BINANCE-{tag}"\n'
    if schema is not None:
        (tmp_path / "foreign.avsc").write_text(json.dumps(schema))
        kafka += f'format = "avro"\nschema = "{tmp_path / "foreign.avsc"}"\nschema_id = 7\n'
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[source]\ntype = "kafka"\n{template}\n[stages.kafka]\n{kafka}')
    return load_config(path, {}).source.settings  # type: ignore[return-value]


def injector(tmp_path: Path, template: str = TEMPLATE, schema: dict[str, Any] | None = FOREIGN) -> KafkaInjector:
    made = KafkaInjector(settings(tmp_path, template, schema), InjectorContext(Clock(), lambda _: None))
    made.prepare()
    return made


def test_canaries_go_into_a_foreign_avro_schema_and_fidelity_compares_what_went_in(tmp_path: Path) -> None:
    kafka = injector(tmp_path)
    decoded = to_comparable(AvroCodec(FOREIGN, 7).decode(kafka._encode(TRADE)))
    assert decoded == {
        "msg_id": decoded["msg_id"],
        "kind": "TRADE",
        "exec_ref": f"BINANCE-{TRADE.trade_id}",
        "instrument": {"symbol": "CANARYUSDT", "venue": "BINANCE"},
        "px": Decimal("65000.12345678"),
        "qty": Decimal("0.00000001"),
        "aggressor": "ASK",  # the buyer was the maker: the aggressor sold
        "exec_ts": 1_700_000_000_123,
        "note": None,
    }
    sent = kafka.sent_record(TRADE)
    assert sent == {k: v for k, v in flat(decoded).items() if k != "note"}
    assert sent["instrument.symbol"] == "CANARYUSDT" and sent["msg_id"] == kafka.sent_record(TRADE)["msg_id"]
    assert KafkaInjector.sent_fields(kafka.stage) == (
        "msg_id", "kind", "exec_ref", "instrument", "instrument.symbol", "instrument.venue", "px", "qty",
        "aggressor", "exec_ts",
    )  # fmt: skip
    background = Trade("BTCUSDT", 1_000_000_001, "65000.5", "1.5", False, 1_700_000_000_000)
    assert to_comparable(AvroCodec(FOREIGN, 7).decode(kafka._encode(background)))["aggressor"] == "BID"


def test_the_same_template_writes_json(tmp_path: Path) -> None:
    kafka = injector(tmp_path, schema=None)
    record = json.loads(kafka._encode(TRADE))
    assert record["px"] == "65000.12345678" and record["exec_ts"] == 1_700_000_000_123
    assert record["instrument"] == {"symbol": "CANARYUSDT", "venue": "BINANCE"} and record["aggressor"] == "ASK"
    assert kafka.sent_record(TRADE)["instrument.venue"] == "BINANCE"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('exec_ts = "{time}"\n', ""), r"^source\.record='exec_ts' \(str\): the template leaves out a field the schema "
         r"requires \(no default, not nullable\) \(schema id 7 for topic executions\); map it in \[source\.record\]"),
        (('venue = "BINANCE"', 'venue = "BINANCE", mic = "XBIN"'), r"source\.record='instrument\.mic'.*no such field"),
        (('px = "{price}"', 'px = "{symbol}"'), r"source\.record='px'.*\{symbol\} \(a text\) cannot go into a field "
         r"of type decimal"),
        (('kind = "TRADE"', 'kind = "FILL"'), r"source\.record='kind'.*'FILL' is not a symbol of enum Kind"),
        (("aggressor = { from = \"side\", map = { BUY = \"BID\", SELL = \"ASK\" } }", 'aggressor = "{side}"'),
         r"source\.record='aggressor'.*\{side\} is BUY or SELL, not symbols of enum Aggressor .*; map it"),
    ],
)  # fmt: skip
def test_a_template_that_does_not_fit_the_schema_stops_before_the_first_canary(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        injector(tmp_path, TEMPLATE.replace(*edit))
    assert raised.value.exit_code == ExitCode.USAGE_ERROR and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('[source.record]\nid = "{symbol}"', r"source\.record=.*carries no \{tag\}"),
        ('[source.record]\nid = "{tag}"\nx = "{venue}"', r"\{venue\} in '\{venue\}' is not a placeholder"),
        ('[source.record]\nid = "{tag}"\nside = { from = "side", map = { BUY = "B" } }', r"the map of side lacks SELL"),
        ('[source.record]\nid = "{tag}"\nx = { from = "price", map = { a = 1 } }', r"a map reads side or maker"),
    ],
)
def test_a_template_is_checked_when_the_config_loads(tmp_path: Path, template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, template, schema=None)


def test_stage_fields_compare_against_the_template_fields(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    head = '[source]\ntype = "kafka"\n[source.record]\nref = "{tag}"\npx = "{price}"\nmeta = { sym = "{symbol}" }\n'
    stage = '[stages.kafka]\nbootstrap = "127.0.0.1:9092"\ntopic = "t"\ntag_field = "ref"\n'
    path.write_text(head + stage + 'fields = { px = "px:decimal", "meta.sym" = "meta.sym" }\n')
    load_config(path, {})
    path.write_text(head + stage + 'fields = { p = "p:decimal" }\n')
    with pytest.raises(ConfigError, match=r"'p' is not a field of the sent record; the source sends ref, px, meta"):
        load_config(path, {})


def test_times_and_ids_take_the_field_type(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "at_ms", "type": "long"},
            {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
            {"name": "at_text", "type": "string"},
            {"name": "price", "type": "double"},
            {"name": "maker", "type": "boolean"},
        ],
    }
    template = (
        '[source.record]\nid = "{tag}"\nat_ms = "{time}"\nat = "{time}"\nat_text = "{time_iso}"\n'
        'price = "{price}"\nmaker = "{maker}"\n'
    )
    kafka = injector(tmp_path, template, schema)
    decoded = AvroCodec(schema, 7).decode(kafka._encode(TRADE))
    assert decoded == {
        "id": TRADE.trade_id,
        "at_ms": 1_700_000_000_123,
        "at": datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        "at_text": "2023-11-14T22:13:20.123Z",
        "price": 65000.12345678,
        "maker": True,
    }
