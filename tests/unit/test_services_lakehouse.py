"""The reference services' lakehouse settings: catalog properties for a REST catalog on S3, the record format
(Avro through a Schema Registry), and the query API's keys, rate limit and id format (compose/services)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer
from services import record_format
from services.api import ApiConfig, create_app
from services.api_access import ApiAccess, IdFormat, RateLimit
from services.common import CommonConfig, ConfigError
from services.faults import ApiFaults
from services.record_format import AvroEncoder, RecordError, RecordFormat, trade_parser
from services.trades import InvalidRecord

ENV = {
    "KAFKA_BOOTSTRAP": "127.0.0.1:19092",
    "RAW_TOPIC": "market.trades.raw",
    "RAW_TOPIC_PARTITIONS": "3",
    "DLQ_TOPIC": "market.trades.dlq",
    "ICEBERG_TABLE": "market.trades",
}
REST = {**ENV, "ICEBERG_CATALOG_URI": "http://127.0.0.1:18181", "S3_ENDPOINT": "http://127.0.0.1:19000"}
SCHEMA = Path(__file__).parents[2] / "compose" / "schemas" / "trade.avsc"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FRAME = {"e": "trade", "E": 1_700_000_000_123, "s": "BTCUSDT", "t": 12345, "p": "65000.12345678", "q": "0.00000001"}
FRAME |= {"T": 1_700_000_000_123, "m": True, "M": True}


def test_rest_catalog_properties_carry_the_object_store() -> None:
    cfg = CommonConfig.from_env({**REST, "S3_ACCESS_KEY_ID": "id", "S3_SECRET_ACCESS_KEY": "secret"})
    assert cfg.rest_catalog and cfg.iceberg_warehouse is None  # the REST server decides the warehouse
    assert cfg.catalog_properties() == {
        "type": "rest",
        "uri": "http://127.0.0.1:18181",
        "s3.endpoint": "http://127.0.0.1:19000",
        "s3.access-key-id": "id",
        "s3.secret-access-key": "secret",
        "s3.force-virtual-addressing": "false",
    }
    sql = CommonConfig.from_env({**ENV, "ICEBERG_CATALOG_URI": "sqlite:////x/c.db", "ICEBERG_WAREHOUSE": "file:///w"})
    assert sql.catalog_properties() == {"type": "sql", "uri": "sqlite:////x/c.db", "warehouse": "file:///w"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**ENV, "ICEBERG_CATALOG_URI": "sqlite:////x/c.db"}, "ICEBERG_WAREHOUSE=<unset> (env): required"),
        ({**REST, "S3_ENDPOINT": "127.0.0.1:19000"}, "S3_ENDPOINT='127.0.0.1:19000' (env): must be http"),
        ({**REST, "ICEBERG_CATALOG_URI": "catalog:8181"}, "or a REST catalog's http"),
        ({**REST, "ICEBERG_WAREHOUSE": "bucket/path"}, "ICEBERG_WAREHOUSE='bucket/path' (env): must be a URI"),
    ],
)
def test_bad_catalog_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CommonConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECORD_FORMAT": "protobuf"}, "RECORD_FORMAT='protobuf' (env): must be one of json, avro"),
        ({"RECORD_FORMAT": "avro"}, "SCHEMA_REGISTRY_URL=<unset> (env): required"),
        ({"RECORD_FORMAT": "avro", "SCHEMA_REGISTRY_URL": "registry:8081"}, "must be an http"),
        ({"RECORD_FORMAT": "avro", "SCHEMA_REGISTRY_URL": "http://r", "SCHEMA_FILE": "/nope.avsc"}, "no such file"),
    ],
)
def test_bad_record_format_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RecordFormat.from_env("t", env)


@pytest.fixture
def avro(monkeypatch: pytest.MonkeyPatch) -> RecordFormat:
    """Avro with the registry's two calls answered in-process: the schema text under id 7."""
    text = json.dumps(json.loads(SCHEMA.read_text()))
    monkeypatch.setattr(record_format.Registry, "register", lambda self, subject, schema: 7)
    monkeypatch.setattr(record_format.Registry, "schema", lambda self, schema_id: text if schema_id == 7 else "")
    fmt = RecordFormat.from_env("market.trades.raw", {"RECORD_FORMAT": "avro", "SCHEMA_REGISTRY_URL": "http://r"})
    assert fmt.subject == "market.trades.raw-value" and fmt.schema_file == SCHEMA
    return fmt


def test_avro_frames_read_back_as_the_trade_they_were(avro: RecordFormat) -> None:
    value = AvroEncoder(avro).encode(json.dumps(FRAME).encode())
    assert value[:5] == b"\x00\x00\x00\x00\x07"
    trade = trade_parser(avro)(value)
    assert (trade.trade_id, trade.price, trade.quantity, trade.side) == (
        12345,
        Decimal("65000.12345678"),
        Decimal("1E-8"),
        "sell",
    )
    assert trade.trade_time_ms == trade.event_time_ms == 1_700_000_000_123


@pytest.mark.parametrize("bad", [{"p": "abc"}, {"E": "soon"}, {"m": None}, {"s": None}])
def test_frames_that_do_not_fit_the_schema_are_refused(avro: RecordFormat, bad: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match="does not fit the Avro schema"):
        AvroEncoder(avro).encode(json.dumps(FRAME | bad).encode())


def _frame(schema_id: int, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(out, parse_schema(json.loads(SCHEMA.read_text())), record)
    return out.getvalue()


def _record(**changes: Any) -> dict[str, Any]:
    times = {"E": EPOCH + dt.timedelta(milliseconds=FRAME["E"]), "T": EPOCH + dt.timedelta(milliseconds=FRAME["T"])}
    return {**FRAME, **times, "p": Decimal(FRAME["p"]), "q": Decimal(FRAME["q"]), **changes}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (json.dumps(FRAME).encode(), "not Confluent-framed Avro"),
        (_frame(7, _record())[:-3], "does not decode with schema id 7"),
        (_frame(7, _record(T=EPOCH + dt.timedelta(microseconds=1_700_000_000_123_001))), "T: must be an integer"),
        (_frame(7, _record(p=Decimal("-1.00000000"))), "not a plain decimal"),
        (_frame(7, _record(q=Decimal("0E-8"))), "must be > 0"),
        (None, "tombstone"),
    ],
)
def test_records_the_consumer_cannot_take_go_to_the_dlq_with_a_reason(
    avro: RecordFormat, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        trade_parser(avro)(value)


def test_id_format() -> None:
    fmt = IdFormat.from_env({"API_ID_FORMAT": "BINANCE-{id}"})
    assert fmt is not None and fmt(12345) == "BINANCE-12345"
    assert IdFormat.from_env({}) is None
    for bad in ("BINANCE", "{id}-{id}", "{trade}", "{id"):
        with pytest.raises(ConfigError, match="API_ID_FORMAT="):
            IdFormat.from_env({"API_ID_FORMAT": bad})


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limit = RateLimit(2.0)
    assert [limit.wait("k", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert limit.wait("other", now=10.0) == 0.0  # per caller
    assert limit.wait("k", now=10.5) == 0.0
    assert limit.wait("k", now=10.5) == pytest.approx(0.5)
    slow = RateLimit(0.5)  # below one a second: still one request at a time
    assert [slow.wait("k", now=0.0), slow.wait("k", now=0.0), slow.wait("k", now=2.0)] == [0.0, 2.0, 0.0]


def ask(app: Any, path: str, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def test_api_keys_and_rate_limit(tmp_path: Path) -> None:
    common = CommonConfig.from_env(
        {**ENV, "ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path}/c.db", "ICEBERG_WAREHOUSE": f"file://{tmp_path}/w"}
    )
    access = ApiAccess.from_env({"API_KEYS": "k1, k2", "API_RATE_LIMIT": "0.1"})  # one request per 10 s
    app = create_app(ApiConfig(common, "127.0.0.1", 1, ApiFaults(), access, None))
    trades = "/v1/trades?symbol=BTCUSDT"
    missing = ask(app, trades)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
    assert ask(app, trades, **{"X-API-Key": "k3"}).status_code == 403
    assert ask(app, trades, **{"X-API-Key": "k2"}).status_code == 503  # let in: no table there yet
    limited = ask(app, trades, **{"X-API-Key": "k2"})
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 10
    assert ask(app, trades, **{"X-API-Key": "k1"}).status_code == 503  # another key has its own budget
    assert ask(app, "/health").status_code == 503  # public (no table yet): load balancers ask without a key


def test_bad_access_settings_name_the_variable() -> None:
    for env, name in (({"API_KEYS": " , "}, "API_KEYS"), ({"API_KEY_HEADER": "X Key"}, "API_KEY_HEADER")):
        with pytest.raises(ConfigError, match=f"{name}="):
            ApiAccess.from_env(env)
    with pytest.raises(ConfigError, match="API_RATE_LIMIT="):
        ApiAccess.from_env({"API_RATE_LIMIT": "-1"})
