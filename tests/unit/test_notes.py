"""What a run tells as it goes stays readable: a note repeated over many looks is counted once; a client
library's repeated log records are collapsed, with the count of those held back."""

from __future__ import annotations

import logging

import pytest

from pipeline_check.core.log_repeats import RepeatFilter, collapse_repeats
from pipeline_check.verdict.events import NoteBuffer


def test_a_note_repeated_over_many_looks_is_counted_once() -> None:
    notes = NoteBuffer()
    told: list[str] = []
    notes.note("offsets unavailable; retrying")
    for _ in range(5):  # the engine looks between the repeats
        told += [n.message for n in notes.notes()]
        notes.note("offsets unavailable; retrying")
    told += [n.message for n in notes.notes()]
    assert told == ["offsets unavailable; retrying"]  # no "(repeated 1 more times)" per look
    notes.note("fault over")
    notes.note("fault over")
    told += [n.message for n in notes.notes(final=True)]
    assert told == [
        "offsets unavailable; retrying",
        "(the note above repeated 5 more times)",
        "fault over",
        "(the note above repeated once more)",
    ]
    assert notes.all == told  # the report's notes hold the counts too
    assert notes.notes(final=True) == []


def test_repeated_log_records_are_collapsed_with_a_count() -> None:
    now = [0.0]
    repeats = RepeatFilter(every=60, clock=lambda: now[0])

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, msg, args, None)

    first = record("Unable connect to node with id %s: %s", 2, "refused")
    assert repeats.filter(first)
    assert not any(repeats.filter(record("Unable connect to node with id %s: %s", n, "x")) for n in range(300))
    assert repeats.filter(record("Unable to update metadata from %s", [2]))  # another kind passes
    now[0] = 61
    later = record("Unable connect to node with id %s: %s", 2, "refused")
    assert repeats.filter(later)
    assert later.getMessage() == (
        "Unable connect to node with id 2: refused (300 more like this in the last 60s were not shown)"
    )


def test_every_logger_under_the_prefix_gets_the_filter(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("pc_test_lib.client")
    collapse_repeats("pc_test_lib")
    child = logging.getLogger("pc_test_lib.client")
    with caplog.at_level(logging.ERROR, logger="pc_test_lib"):
        for _ in range(100):
            child.error("Unable connect to node with id %s", 2)
    assert len(caplog.records) == 1
    collapse_repeats("pc_test_lib")  # again: still one filter each
    assert len(child.filters) == 1
