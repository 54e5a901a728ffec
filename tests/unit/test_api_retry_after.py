"""The API probe's reading of a 429's Retry-After header (delta seconds or an HTTP date)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline_check.backends.api.probe import retry_after


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 120 ", 120.0), ("0", 0.0), (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None)],
)
def test_delta_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds


def test_http_dates() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after(later) == pytest.approx(30, abs=2)
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after(earlier) == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00") is None  # no zone: not an HTTP date
