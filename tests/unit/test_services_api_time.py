"""The query API's time forms (compose/services/api_time.py): query times read, answer times written, and the
DuckDB expression that writes them agreeing with the Python one."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest
from services.api_time import MAX_EPOCH_US, TimeError, TimeForm, TimeFormat
from services.common import ConfigError

US = 1_717_243_200_123_000  # 2024-06-01T12:00:00.123Z
FORMS = list(TimeForm)

RENDERED = {
    TimeForm.MS: 1_717_243_200_123,
    TimeForm.S: 1_717_243_200,
    TimeForm.FLOAT_S: 1_717_243_200.123,
    TimeForm.US: US,
    TimeForm.NS: US * 1000,
    TimeForm.ISO: "2024-06-01T12:00:00.123000+00:00",
    TimeForm.ISO_NAIVE: "2024-06-01T12:00:00.123000",
}


def test_the_form_is_read_from_the_environment_and_defaults_to_epoch_ms() -> None:
    assert TimeFormat.from_env({}) == TimeFormat(TimeForm.MS)
    assert TimeFormat.from_env({"API_TIME_FORMAT": "ISO_naive"}).form is TimeForm.ISO_NAIVE
    with pytest.raises(ConfigError) as exc:
        TimeFormat.from_env({"API_TIME_FORMAT": "rfc3339"})
    assert str(exc.value) == ("API_TIME_FORMAT='rfc3339' (env): must be one of ms, s, float_s, us, ns, iso, iso_naive")


@pytest.mark.parametrize("form", FORMS)
def test_each_form_renders_a_time_as_documented_and_reads_it_back(form: TimeForm) -> None:
    fmt = TimeFormat(form)
    assert fmt.render(US) == RENDERED[form]
    back = fmt.parse(str(RENDERED[form]))
    assert back == (US // 1_000_000 * 1_000_000 if form is TimeForm.S else US)


@pytest.mark.parametrize(
    ("form", "raw", "us"),
    [
        (TimeForm.ISO, "2024-06-01T12:00:00.123Z", US),
        (TimeForm.ISO, "2024-06-01T14:00:00.123+02:00", US),
        (TimeForm.ISO, "2024-06-01T12:00:00+00:00", US - 123_000),
        (TimeForm.ISO_NAIVE, "2024-06-01T12:00:00.123", US),
        (TimeForm.ISO_NAIVE, "2024-06-01", US - 43_200_123_000),
        (TimeForm.FLOAT_S, "1717243200", US - 123_000),
        (TimeForm.FLOAT_S, "1717243200.1230004", US + 1),  # finer than the table: rounded up
        (TimeForm.NS, "1717243200123000001", US + 1),
        (TimeForm.NS, "1717243200123000000", US),
        (TimeForm.MS, "0", 0),
    ],
)
def test_other_spellings_of_a_time_are_read_to_the_microsecond(form: TimeForm, raw: str, us: int) -> None:
    assert TimeFormat(form).parse(raw) == us


@pytest.mark.parametrize(
    ("form", "raw", "hint"),
    [
        (TimeForm.MS, "1717243200.5", "must be epoch milliseconds"),
        (TimeForm.MS, "-1", "must be epoch milliseconds"),
        (TimeForm.MS, "+5", "must be epoch milliseconds"),
        (TimeForm.MS, "1_000", "must be epoch milliseconds"),
        (TimeForm.MS, "2024-06-01T12:00:00Z", "must be epoch milliseconds"),
        (TimeForm.MS, "253402300800000", "must be epoch milliseconds, between 1970 and 9999"),
        (TimeForm.MS, "9" * 40, "must be epoch milliseconds"),
        (TimeForm.S, "1717243200.5", "must be epoch seconds (an integer)"),
        (TimeForm.FLOAT_S, "soon", "must be epoch seconds, e.g. 1717243200.123"),
        (TimeForm.FLOAT_S, "NaN", "must be epoch seconds"),
        (TimeForm.FLOAT_S, "1e999999999", "between 1970 and 9999"),
        (TimeForm.FLOAT_S, "-0.5", "between 1970 and 9999"),
        (TimeForm.ISO, "2024-06-01T12:00:00", "must be ISO-8601 with a UTC offset"),
        (TimeForm.ISO, "1717243200123", "must be ISO-8601 with a UTC offset"),
        (TimeForm.ISO_NAIVE, "2024-06-01T12:00:00+00:00", "must be ISO-8601 without a zone (UTC)"),
        (TimeForm.ISO_NAIVE, "1969-12-31T23:59:59", "between 1970 and 9999"),
    ],
)
def test_a_time_not_in_the_form_is_refused_with_the_form_named(form: TimeForm, raw: str, hint: str) -> None:
    with pytest.raises(TimeError) as exc:
        TimeFormat(form).parse(raw)
    assert hint in str(exc.value)


@pytest.mark.parametrize("form", FORMS)
def test_the_sql_expression_writes_what_render_writes(form: TimeForm) -> None:
    fmt = TimeFormat(form)
    times = [0, 1, 999_999, US, US + 456, MAX_EPOCH_US]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE TABLE src (t TIMESTAMPTZ)")
        con.executemany("INSERT INTO src VALUES (make_timestamptz($1))", [[us] for us in times])
        got = [r[0] for r in con.execute(f"SELECT {fmt.sql('src.t')} FROM src ORDER BY src.t").fetchall()]
    finally:
        con.close()
    assert got == [fmt.render(us) for us in times]
    if form in (TimeForm.ISO, TimeForm.ISO_NAIVE):  # text in time order sorts in time order
        assert got == sorted(got)
        parsed = datetime.fromisoformat(str(got[3]))
        assert parsed.replace(tzinfo=UTC) == datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
