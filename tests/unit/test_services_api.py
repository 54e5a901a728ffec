"""The query API (compose/services/api.py) in process over a real pyiceberg SQL table: its time forms in answers and
query parameters, and what each deliberate fault does to an answer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from services.api import ApiConfig, create_app
from services.api_access import ApiAccess
from services.api_time import TimeForm, TimeFormat
from services.common import CommonConfig
from services.faults import RETRACT_KEY, ApiFaults, picked
from services.iceberg import TRADES_ARROW_SCHEMA, ensure_table, open_catalog
from services.trades import Row, Trade, to_arrow

from tests.unit.test_services_lakehouse import ENV, ask

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z, ms
# trade id -> (ms after T0, price): two trades in one second with the later one first by id
TRADES = {
    1: (900, "10.5"),
    2: (100, "99.25"),
    3: (1500, "7.125"),
    4: (2500, "1000"),
    5: (3000, "50"),
    6: (4200, "0.5"),
}


@pytest.fixture(scope="module")
def common(tmp_path_factory: pytest.TempPathFactory) -> CommonConfig:
    folder = tmp_path_factory.mktemp("api")
    cfg = CommonConfig.from_env(
        {**ENV, "ICEBERG_CATALOG_URI": f"sqlite:///{folder}/c.db", "ICEBERG_WAREHOUSE": f"file://{folder}/w"}
    )
    table = ensure_table(open_catalog(cfg, writer=True), cfg)
    rows = [
        Row(Trade("BTCUSDT", i, Decimal(p), Decimal("1"), "buy", T0 + ms, T0 + ms), T0 + ms + 7, "t", 0, i)
        for i, (ms, p) in TRADES.items()
    ]
    table.append(to_arrow(rows, TRADES_ARROW_SCHEMA))
    return cfg


def get(common: CommonConfig, query: str, faults: ApiFaults | None = None, form: TimeForm = TimeForm.MS) -> Any:
    """The answer to ``/v1/trades?symbol=BTCUSDT&<query>`` of an API with these settings."""
    app = create_app(ApiConfig(common, "127.0.0.1", 1, faults or ApiFaults(), ApiAccess(), None, TimeFormat(form)))
    return ask(app, f"/v1/trades?symbol=BTCUSDT&{query}")


def ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [r["trade_id"] for r in answer.json()["data"]]


@pytest.mark.parametrize("form", list(TimeForm))
def test_answers_and_parameters_use_the_configured_time_form(common: CommonConfig, form: TimeForm) -> None:
    fmt = TimeFormat(form)
    start, end = fmt.render((T0 + 100) * 1000), fmt.render((T0 + 3000) * 1000)
    answer = get(common, urlencode({"start_time": start, "end_time": end}), form=form)  # "+" must be %2B
    # newest first by the table's times, also where the form cannot tell two trades of one second apart
    assert ids(answer) == [4, 3, 1, 2]
    body = answer.json()
    assert (body["meta"]["start_time"], body["meta"]["end_time"]) == (start, end)
    for row in body["data"]:
        ms = T0 + TRADES[row["trade_id"]][0]
        assert row["trade_time"] == row["event_time"] == fmt.render(ms * 1000)
        assert row["ingest_time"] == fmt.render((ms + 7) * 1000)


def test_the_default_form_is_epoch_ms_as_before(common: CommonConfig) -> None:
    body = get(common, f"start_time={T0}&end_time={T0 + 1000}").json()
    assert body["data"][0] == {
        "symbol": "BTCUSDT",
        "trade_id": 1,
        "price": "10.50000000",
        "quantity": "1.00000000",
        "side": "buy",
        "event_time": T0 + 900,
        "trade_time": T0 + 900,
        "ingest_time": T0 + 907,
    }
    assert body["meta"]["start_time"] == T0 and body["meta"]["end_time"] == T0 + 1000


def test_a_time_in_another_form_is_refused_naming_the_form(common: CommonConfig) -> None:
    answer = get(common, f"start_time={T0}", form=TimeForm.ISO)
    assert answer.status_code == 422
    assert answer.json()["error"] == (
        f"start_time={T0} (query): must be ISO-8601 with a UTC offset, e.g. 2024-06-01T12:00:00.123+00:00 "
        "(API_TIME_FORMAT=iso)"
    )
    assert (
        get(common, "end_time=2024-06-01T12:00:00")
        .json()["error"]
        .startswith("end_time=2024-06-01T12:00:00 (query): must be epoch milliseconds")
    )
    backwards = get(common, f"start_time={T0 + 5}&end_time={T0}")
    assert backwards.status_code == 400 and "must be before end_time" in backwards.json()["error"]


def test_price_order_with_a_cap_answers_a_page_that_time_cannot_page(common: CommonConfig) -> None:
    answer = get(common, f"start_time={T0}&limit=10", ApiFaults(price_order=True, page_cap=3))
    assert ids(answer) == [4, 2, 5]  # the highest prices, whatever their times
    assert answer.json()["meta"]["limit"] == 10


def test_an_ignored_end_time_answers_everything_from_the_start(common: CommonConfig) -> None:
    window = f"start_time={T0 + 1000}&end_time={T0 + 2000}"
    assert ids(get(common, window)) == [3]
    answer = get(common, window, ApiFaults(ignore_end_time=True))
    assert ids(answer) == [6, 5, 4, 3]
    assert answer.json()["meta"]["end_time"] == T0 + 2000  # echoed as if applied


def test_retracted_trades_stop_being_returned_after_their_first_answer(common: CommonConfig) -> None:
    faults = ApiFaults(retract_fraction=0.5, retract_after_ms=0)
    app = create_app(ApiConfig(common, "127.0.0.1", 1, faults, ApiAccess(), None))
    doomed = {i for i in TRADES if picked(i, 0.5, RETRACT_KEY)}
    assert doomed and doomed != set(TRADES)  # the fixture's ids hold both kinds
    assert sorted(ids(ask(app, "/v1/trades?symbol=BTCUSDT"))) == sorted(TRADES)
    assert sorted(ids(ask(app, "/v1/trades?symbol=BTCUSDT"))) == sorted(set(TRADES) - doomed)
    # a page of two still holds two rows: the hidden ones are read past, not counted
    assert len(ids(ask(app, "/v1/trades?symbol=BTCUSDT&limit=2"))) == 2
