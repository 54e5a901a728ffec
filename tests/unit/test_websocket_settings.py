"""The ``websocket`` source's settings: each one that cannot work is a one-line error at load, naming
the setting, the value and the fix; stage fields are checked against the dialect's record."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_check.backends.websocket import tls
from pipeline_check.backends.websocket.injector import WebSocketInjector, WebSocketSettings
from pipeline_check.config import load_config
from pipeline_check.core.errors import ConfigError

STAGE = """
[stages.kafka]
bootstrap = "127.0.0.1:9"
topic = "t"
tag_field = "t"
fields = {fields}
"""


def load(tmp_path: Path, source: str, fields: str = '{ p = "p:decimal" }') -> WebSocketSettings:
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[source]\ntype = "websocket"\nport = 18765\n{source}\n' + STAGE.format(fields=fields))
    settings = load_config(path, {}).source.settings
    assert isinstance(settings, WebSocketSettings)
    return settings


def test_defaults_are_binance_with_canaries_on_their_own_symbol(tmp_path: Path):
    settings = load(tmp_path, "")
    assert (settings.dialect, settings.canaries_ride, settings.max_connection_age) == ("binance", "own", "exchange")
    assert settings.tls is None


@pytest.mark.parametrize(("text", "seconds"), [('"90s"', 90.0), ('"never"', "never"), ("3", 3.0)])
def test_maximum_connection_age(tmp_path: Path, text: str, seconds: float | str):
    assert load(tmp_path, f"max_connection_age = {text}").max_connection_age == seconds


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('dialect = "coinbase"', "source.dialect='coinbase' (str): Input should be 'binance' or 'kraken'"),
        ('canaries_ride = "all"', "source.canaries_ride='all' (str): Input should be 'own' or 'subscribed'"),
        ('max_connection_age = "0s"', "expected a duration such as 30s or 2m, or exchange (the dialect's limit)"),
        ('max_connection_age = "soon"', "source.max_connection_age='soon'"),
        ("tls = { folder = 'x' }", "needs generate = true, or cert and key (PEM files)"),
        ("tls = { generate = true, cert = 'c.pem', key = 'k.pem' }", "give either generate = true or cert and key"),
        ("tls = { generate = true, hosts = [] }", "source.tls.hosts=[] (list)"),
        ("tls = { generat = true }", "did you mean 'generate'?"),
        ("tls = { cert = '/nowhere/c.pem', key = '/nowhere/k.pem' }", "source.tls.cert='/nowhere/c.pem'"),
    ],
)
def test_settings_that_cannot_work_fail_at_load_in_one_line(tmp_path: Path, source: str, message: str):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, source)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_users_certificate_is_loaded_at_load(tmp_path: Path):
    files = tls.generate(tmp_path / "pki")
    settings = load(tmp_path, f"tls = {{ cert = '{files.cert}', key = '{files.key}', ca = '{files.ca}' }}")
    assert settings.tls is not None and settings.tls.files() == files


def test_kraken_stage_fields_compare_with_krakens_record(tmp_path: Path):
    settings = load(tmp_path, 'dialect = "kraken"', '{ p = "price:decimal", T = "timestamp:ms" }')
    assert WebSocketInjector.sent_fields(settings) == (
        "symbol",
        "side",
        "price",
        "qty",
        "ord_type",
        "trade_id",
        "timestamp",
    )
    with pytest.raises(ConfigError, match="'p' is not a field of the sent record; the source sends symbol, side"):
        load(tmp_path, 'dialect = "kraken"', '{ p = "p:decimal" }')


def test_binance_sends_trade_and_agg_trade_fields(tmp_path: Path):
    assert WebSocketInjector.sent_fields(load(tmp_path, "")) == (
        *("e", "E", "s", "t", "p", "q", "T", "m", "M"),
        *("a", "f", "l"),
    )
