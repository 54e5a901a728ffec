from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.config.environment import substitute
from pipeline_check.config.scenarios import BUILTIN_SCENARIOS
from pipeline_check.core.durations import duration
from pipeline_check.core.errors import ConfigError

GOOD = """
[source]
type = "websocket"
port = "${FEED_PORT:-9443}"

[stages.kafka]
bootstrap = "${KAFKA_BOOTSTRAP}"
topic = "trades.raw"

[stages.consumer]
group = "iceberg-writer"

[stages.iceberg]
table = "market.trades"

[stages.iceberg.catalog]
uri = "sqlite:///cat.db"
warehouse = "file:///wh"
"s3.secret-access-key" = "${S3_SECRET}"
password = "hunter2"
token = "t0k3n"

[stages.api]
base_url = "http://127.0.0.1:8000"
headers = { Authorization = "Bearer ${API_TOKEN}" }
poll_interval = "250ms"

[load]
count = 500
rate = 50
drain_timeout = "2m"

[sla]
thresholds = ["e2e.p99 < 30s", "stage.iceberg.p95 < 10s", "lost == 0"]

[scenarios.burst]
description = "a short burst"
load = { count = 2000, rate = 1000 }
thresholds = ["throughput >= 90%"]
"""
ENV = {"KAFKA_BOOTSTRAP": "127.0.0.1:9092", "S3_SECRET": "s3cr3t", "API_TOKEN": "abc123"}
SECRETS = ("s3cr3t", "hunter2", "t0k3n", "abc123")


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return load_config(path, ENV if env is None else env)


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    return str(exc.value)


def test_good_config(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert config.source.type == "websocket" and config.source.settings.port == 9443  # type: ignore[attr-defined]
    assert config.stage_names() == ("kafka", "consumer", "iceberg", "api")
    assert config.route.final == "api" and config.route.upstream["iceberg"] == "kafka"
    kafka, consumer, api = (config.stage(n) for n in ("kafka", "consumer", "api"))
    assert kafka is not None and kafka.settings.bootstrap == "127.0.0.1:9092"  # type: ignore[attr-defined]
    # the consumer-group probe takes the broker and topic of stages.kafka unless it names its own
    assert consumer is not None and consumer.settings.topic == "trades.raw"  # type: ignore[attr-defined]
    assert api is not None and api.settings.poll_interval == 0.25  # type: ignore[attr-defined]
    assert config.load.drain_timeout == 120.0
    burst = config.load_for("burst")
    assert (burst.count, burst.rate, burst.seed, burst.drain_timeout) == (2000, 1000, 42, 120.0)
    assert config.load_for("smoke") == config.load.model_copy(
        update=BUILTIN_SCENARIOS["smoke"].load.model_dump(exclude_none=True)
    )
    assert [t.text for t in config.thresholds_for(None)] == ["e2e.p99 < 30s", "stage.iceberg.p95 < 10s", "lost == 0"]
    assert [t.text for t in config.thresholds_for("burst")][-1] == "throughput >= 90%"


def test_environment_overrides_default(tmp_path: Path) -> None:
    assert load(tmp_path, GOOD, ENV | {"FEED_PORT": "1234"}).source.settings.port == 1234  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "env", "result"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("x${A}y${B}", {"A": "1", "B": "2"}, "x1y2"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-}", {}, ""),
        ("${A:-fallback}", {"A": ""}, ""),  # set but empty is set
        ("cost $$5", {}, "cost $5"),
        ("$A stays", {}, "$A stays"),
    ],
)
def test_substitute(text: str, env: dict[str, str], result: str) -> None:
    assert substitute(text, env, "x") == result


def test_missing_variable_names_the_setting(tmp_path: Path) -> None:
    message = load_error(tmp_path, GOOD, {k: v for k, v in ENV.items() if k != "KAFKA_BOOTSTRAP"})
    assert message.startswith("stages.kafka.bootstrap='${KAFKA_BOOTSTRAP}' (str): ")
    assert "environment variable KAFKA_BOOTSTRAP is not set" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("bootstrap = ", "bootstrp = ", "pipeline.toml: stages.kafka.bootstrp='127.0.0.1:9092' (str): is not a known"),
        ("bootstrap = ", "bootstrp = ", "did you mean 'bootstrap'?"),
        ("[load]\ncount", "[load]\ncont", "load.cont=500 (int): is not a known setting; did you mean 'count'?"),
        ("[stages.consumer]", "[stages.consumr]", "stages.consumr='consumr' (str): is not a built-in stage"),
        ("[stages.consumer]", "[stages.consumr]", "did you mean 'consumer'?"),
        ('port = "', 'prot = "', "source.prot='9443' (str): is not a known setting; did you mean 'port'?"),
        (
            'drain_timeout = "2m"',
            'drain_timeout = "2 hours"',
            "load.drain_timeout='2 hours' (str): expected a duration",
        ),
        ('drain_timeout = "2m"', 'drain_timeout = "-1s"', "load.drain_timeout='-1s'"),
        ('poll_interval = "250ms"', "poll_interval = 0", "stages.api.poll_interval=0 (int): "),
        ('type = "websocket"', 'type = "pigeon"', "source.type='pigeon' (str): is not a known injector; known: kafka"),
        ('"trades.raw"', '"trades.raw"\nfields = { p = "p:nonsense" }', "stages.kafka.fields={'p': 'p:nonsense'}"),
        (
            '"trades.raw"',
            '"trades.raw"\nfields = { p = "x:decimal" }',
            "'x' is not a field of the sent record; the source sends e, E, s",
        ),
        (
            '"http://127.0.0.1:8000"',
            '"http://127.0.0.1:abc"',
            "stages.api.base_url='http://127.0.0.1:abc' (str): is not a URL",
        ),
        ('"http://127.0.0.1:8000"', '"ftp://host"', "must be an http:// or https:// URL"),
        ('poll_interval = "250ms"', 'query = "/q?s={sym}"', "has unknown placeholders ['sym']"),
        ('poll_interval = "250ms"', 'records = "data["', "stages.api.records='data[' (str): is not a JMESPath"),
        ('"lost == 0"]', '"lost == 0", "lost==0"]', "repeats 'lost == 0'"),
        ('"lost == 0"]', '"throughput >= 200%"]', "can never pass"),
        ("[stages.consumer]", '[stages.consumer]\nupstream = "nowhere"', "stages.consumer.upstream='nowhere'"),
        ("rate = 50", "rate = -5", "load.rate=-5 (int): "),
        ('"stage.iceberg.p95 < 10s"', '"stage.icebreg.p95 < 10s"', "unknown stage 'icebreg'"),
        ('["throughput >= 90%"]', '["e2e.p99 < 30"]', "scenarios.burst.thresholds='e2e.p99 < 30' (str): "),
        ('["throughput >= 90%"]', '["e2e.p99 < 30"]', "'30' is not a duration"),
        ("[stages.kafka]", "[stagse.kafka]", "did you mean 'stages'?"),
    ],
)
def test_load_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert expected in load_error(tmp_path, GOOD.replace(old, new, 1))


def test_a_stage_threshold_needs_that_stage(tmp_path: Path) -> None:
    text = GOOD.split("[stages.iceberg]")[0] + '[sla]\nthresholds = ["stage.api.p99 < 1s"]\n'
    message = load_error(tmp_path, text)
    assert message.startswith("sla.thresholds='stage.api.p99 < 1s' (str): unknown stage 'api'")
    assert "configured stages: kafka, consumer" in message


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("burts", "did you mean 'burst'?"), ("smoek", "did you mean 'smoke'?"), ("zzz", "known: smoke, ")],
)
def test_unknown_scenario(tmp_path: Path, name: str, fragment: str) -> None:
    config = load(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="is not a known scenario") as exc:
        config.load_for(name)
    assert str(exc.value).startswith(f"--scenario={name!r} (str): ")
    assert fragment in str(exc.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; pass -c"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, {})
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(latin, {})
    assert "is not valid TOML" in load_error(tmp_path, "[source\n")


def test_a_custom_stage_names_its_probe_and_upstream(tmp_path: Path) -> None:
    text = GOOD + '\n[stages.lake]\ntype = "iceberg"\nupstream = "kafka"\nbranch = true\ntable = "a.b"\ncatalog = {}\n'
    config = load(tmp_path, text)
    assert config.stage_names() == ("kafka", "consumer", "iceberg", "api", "lake")
    assert config.route.final == "api" and config.route.upstream["lake"] == "kafka"
    missing = GOOD + '\n[stages.lake]\ntable = "a.b"\n'
    assert "give it a probe `type` and an `upstream`" in load_error(tmp_path, missing)
    unknown = GOOD + '\n[stages.lake]\ntype = "icebreg"\nupstream = "kafka"\n'
    assert "stages.lake.type='icebreg' (str): is not a known probe; did you mean 'iceberg'?" in load_error(
        tmp_path, unknown
    )


def test_the_consumer_group_probe_needs_a_stage_upstream(tmp_path: Path) -> None:
    kafka = GOOD[GOOD.index("[stages.kafka]") : GOOD.index("[stages.consumer]")]
    text = GOOD.replace(kafka, "").replace("[stages.consumer]", "[stages.consumer]\nbootstrap = 'x:1'\ntopic = 't'")
    message = load_error(tmp_path, text)
    assert "no stage is configured upstream of consumer" in message


def test_redacted_masks_secrets(tmp_path: Path) -> None:
    text = GOOD.replace('"http://127.0.0.1:8000"', '"http://user:${API_TOKEN}@127.0.0.1:8000"')
    data = load(tmp_path, text).redacted()
    text = json.dumps(data)  # JSON-able as it stands
    assert not [s for s in SECRETS if s in text]
    assert data["stages"]["api"]["base_url"] == "http://user:***@127.0.0.1:8000"
    catalog = data["stages"]["iceberg"]["catalog"]
    assert catalog == {
        "uri": "sqlite:///cat.db",
        "warehouse": "file:///wh",
        "s3.secret-access-key": "***",
        "password": "***",
        "token": "***",
    }
    assert data["stages"]["api"]["headers"] == {"Authorization": "***"}
    assert "abc123" not in repr(load(tmp_path, GOOD).stage("api"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("headers = {", "header = {"),  # a misspelt key holding secrets
        ("[stages.iceberg.catalog]", "[stages.iceberg.catalg]"),  # a misspelt table holding a password
        ("password = ", "passwd = "),  # any secret-looking catalog key is fine, and masked in redacted()
        ('"http://127.0.0.1:8000"', '"http://user:${API_TOKEN}@127.0.0.1:abc"'),  # a bad URL holding a password
    ],
)
def test_errors_do_not_print_secrets(tmp_path: Path, old: str, new: str) -> None:
    try:
        config = load(tmp_path, GOOD.replace(old, new, 1))
    except ConfigError as exc:
        assert not [s for s in SECRETS if s in str(exc)], str(exc)
    else:
        assert not [s for s in SECRETS if s in json.dumps(config.redacted())]


@pytest.mark.parametrize(
    ("value", "seconds"), [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), (" 1.5 s ", 1.5), (3, 3.0), (0.25, 0.25)]
)
def test_duration(value: object, seconds: float) -> None:
    assert duration(value) == seconds


@pytest.mark.parametrize("value", ["30", "1h", "fast", True, None, "-1s"])
def test_bad_duration(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        duration(value)
