"""The Kafka plugins' record format settings: checked at load, inherited by the Kafka injector from
stages.kafka, and the codecs they make without a registry (a local .avsc and a fixed id)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pipeline_check.backends.kafka.codecs import UnknownSchemaError, to_comparable, trade_record
from pipeline_check.backends.kafka.codecs.record_format import reader_codec, writer_codec
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import Trade
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import ConfigError

COMPOSE = Path(__file__).parents[2] / "compose"
SCHEMA = COMPOSE / "schemas" / "trade.avsc"
TRADE = Trade("CANARYUSDT", RunId(5).tag(3), "65000.12345678", "0.00000001", False, 1_700_000_000_123, seq=3)


def load(tmp_path: Path, source: str, kafka: str) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"[source]\n{source}\n"
        f'[stages.kafka]\nbootstrap = "127.0.0.1:9092"\ntopic = "trades.raw"\n{kafka}\n'
        '[stages.consumer]\ngroup = "g"\n'
    )
    return load_config(path, {})


def test_the_kafka_injector_takes_the_format_from_stages_kafka(tmp_path: Path) -> None:
    kafka = f'format = "avro"\nregistry_url = "http://127.0.0.1:8081"\nsubject = "trades-v1"\nschema = "{SCHEMA}"'
    config = load(tmp_path, 'type = "kafka"', kafka)
    source, stage = config.source.settings, config.stage("kafka")
    assert stage is not None
    for settings in (source, stage.settings):
        assert settings.format == "avro"  # type: ignore[attr-defined]
        assert settings.registry_url == "http://127.0.0.1:8081"  # type: ignore[attr-defined]
        assert settings.subject == "trades-v1"  # type: ignore[attr-defined]
        assert settings.schema_file == str(SCHEMA)  # type: ignore[attr-defined]
    assert config.redacted()["source"]["schema"] == str(SCHEMA)  # reports spell it as the file does
    # the source's own settings win over what it would inherit
    own = load(tmp_path, 'type = "kafka"\nsubject = "mine"', kafka)
    assert own.source.settings.subject == "mine"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ('format = "avro"', "needs registry_url, or schema"),
        (f'format = "avro"\nschema = "{SCHEMA}"', "needs registry_url, or schema"),
        ('registry_url = "http://127.0.0.1:8081"', "registry_url only apply with format = 'avro'"),
        ("schema_id = 3", "schema_id only apply with format = 'avro'"),
        ('format = "protobuf"', "stages.kafka.format='protobuf'"),
        ('format = "avro"\nregistry_url = "127.0.0.1:8081"', "must be an http"),
        ('format = "avro"\nregistry_url = "http://r"\nschema_id = -1', "stages.kafka.schema_id=-1"),
    ],
)
def test_bad_format_settings_are_one_line_errors(tmp_path: Path, kafka: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, 'type = "websocket"\nport = 1', kafka)
    assert "\n" not in str(caught.value)


def test_local_schema_codecs_round_trip_a_canary(tmp_path: Path) -> None:
    config = load(tmp_path, 'type = "kafka"', f'format = "avro"\nschema = "{SCHEMA}"\nschema_id = 42')
    writer = writer_codec(config.source.settings, "trades.raw", "source")  # type: ignore[arg-type]
    stage = config.stage("kafka")
    assert stage is not None and writer is not None
    reader = reader_codec(stage.settings, "trades.raw", "stages.kafka")  # type: ignore[arg-type]
    assert reader is not None
    frame = writer.encode(trade_record(TRADE.to_dict()))
    assert frame[:5] == b"\x00\x00\x00\x00\x2a"  # magic byte, then id 42 big-endian
    decoded = to_comparable(reader.decode(frame))
    sent = TRADE.to_dict()
    assert {k: v for k, v in decoded.items() if k not in "pq"} == {k: v for k, v in sent.items() if k not in "pq"}
    assert (decoded["p"], decoded["q"]) == (Decimal("65000.12345678"), Decimal("0.00000001"))
    other = writer.encode(trade_record(TRADE.to_dict()))[:1] + (43).to_bytes(4, "big") + frame[5:]
    with pytest.raises(UnknownSchemaError, match="schema id 43"):
        reader.decode(other)


def test_a_missing_schema_file_names_the_setting(tmp_path: Path) -> None:
    config = load(tmp_path, 'type = "kafka"', f'format = "avro"\nschema = "{tmp_path}/nope.avsc"\nschema_id = 1')
    with pytest.raises(ConfigError, match=r"source.schema=.*nope.avsc.*cannot read the schema file"):
        writer_codec(config.source.settings, "trades.raw", "source")  # type: ignore[arg-type]


def test_the_lakehouse_config_loads() -> None:
    config = load_config(COMPOSE / "pipeline.lakehouse.toml", {})
    kafka, iceberg, api = (config.stage(name) for name in ("kafka", "iceberg", "api"))
    assert kafka is not None and iceberg is not None and api is not None
    assert kafka.settings.format == "avro"  # type: ignore[attr-defined]
    assert iceberg.settings.catalog["type"] == "rest"  # type: ignore[attr-defined]
    assert api.settings.tag_pattern == "BINANCE-{tag}"  # type: ignore[attr-defined]
    shown = config.redacted()
    assert shown["stages"]["api"]["headers"] == {"X-API-Key": "***"}
    assert shown["stages"]["iceberg"]["catalog"]["s3.secret-access-key"] == "***"
