"""Time forms: every form a stage writes an instant in reads back to the same epoch millisecond at the
precision it carries, and query placeholders write a window that covers what was asked."""

from __future__ import annotations

import datetime as dt
from urllib.parse import unquote

import pytest
from services.api_time import TimeForm, TimeFormat

from pipeline_check.canary.fidelity import compare
from pipeline_check.canary.time_forms import covered, forms_in, placeholders, read_time, write_time, zone

MS = 1_717_243_200_123  # 2024-06-01T12:00:00.123Z


@pytest.mark.parametrize("form", list(TimeForm))
def test_every_form_the_reference_api_writes_reads_back(form: TimeForm) -> None:
    written = TimeFormat(form).render(MS * 1000)
    instant = read_time(written)
    assert instant is not None, written
    assert instant.same_as(MS)
    assert instant.ms == (MS // 1000 * 1000 if form == TimeForm.S else MS)
    assert not instant.same_as(MS + 1000)  # a second off is another instant in every form


@pytest.mark.parametrize(
    ("value", "ms", "unit"),
    [
        (1_717_243_200, 1_717_243_200_000.0, 1000.0),
        ("1717243200123", float(MS), 1.0),
        (1_717_243_200_123_456, MS + 0.456, 0.001),
        (1_717_243_200_123_456_789, MS + 0.456789, 0.000001),
        (1717243200.5, 1_717_243_200_500.0, 100.0),
        ("2024-06-01T12:00:00Z", 1_717_243_200_000.0, 1000.0),
        ("2024-06-01 14:00:00.123+02:00", float(MS), 1.0),
        (dt.datetime(2024, 6, 1, 12, 0, 0, 123000), float(MS), 0.001),
    ],
)
def test_read_time(value: object, ms: float, unit: float) -> None:
    instant = read_time(value)
    assert instant is not None
    assert instant.ms == pytest.approx(ms, abs=1e-6) and instant.unit_ms == pytest.approx(unit)


@pytest.mark.parametrize("value", [True, None, "soon", "", float("nan"), [MS]])
def test_what_is_no_time(value: object) -> None:
    assert read_time(value) is None


def test_naive_iso_is_read_in_the_stage_zone() -> None:
    berlin = read_time("2024-06-01T14:00:00.123", zone("Europe/Berlin"))
    assert berlin is not None and berlin.ms == MS


def test_placeholders_write_the_same_window_in_every_form() -> None:
    forms = forms_in("/t?a={start_iso}&b={end_ms}&c={start_s}&d={symbol}")
    assert forms == {"iso", "ms", "s"}
    values = placeholders(MS, MS + 500, forms)
    # the window is widened to whole seconds (the coarsest form asked), and every form writes that one
    assert (values["start_s"], values["end_s"]) == ("1717243200", "1717243201")
    assert (values["start_ms"], values["end_ms"]) == ("1717243200000", "1717243201000")
    assert unquote(values["start_iso"]) == "2024-06-01T12:00:00.000+00:00" and "%2B" in values["start_iso"]
    assert covered(MS, MS + 500, 1000.0) == (1_717_243_200_000, 1_717_243_201_000)
    assert write_time(MS, "iso_naive", zone("Europe/Berlin")) == "2024-06-01T14:00:00.123"
    assert write_time(MS, "float_s") == "1717243200.123" and write_time(MS, "ns") == str(MS * 1_000_000)


def test_the_time_comparison_takes_any_form_at_its_precision() -> None:
    sent = {"T": MS}
    fields = {"trade_time": "T:time"}
    for held in (MS * 1000, MS / 1000, "2024-06-01T12:00:00.123+00:00", MS // 1000):
        assert not list(compare(sent, {"trade_time": held}, fields)), held
    assert list(compare(sent, {"trade_time": MS + 2000}, fields))
    berlin = {"trade_time": "T:time@Europe/Berlin"}
    assert not list(compare(sent, {"trade_time": "2024-06-01T14:00:00.123"}, berlin))
