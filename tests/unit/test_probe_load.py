"""The probes' load counter: requests and bytes per kind, safe from several threads, as rates per second."""

from __future__ import annotations

import threading

import pytest

from pipeline_check.verdict.probe_load import LoadFigures, ProbeLoad, byte_rate


def test_requests_and_bytes_add_up_per_kind() -> None:
    load = ProbeLoad()
    load.add("requests", 1200)
    load.add("requests", 800)
    load.add("object_gets", 3_000_000, calls=3)
    figures = load.figures(2.0)
    assert figures.calls == {"requests": 2, "object_gets": 3}
    assert figures.bytes == {"requests": 2000, "object_gets": 3_000_000}
    assert (figures.requests, figures.per_s("requests"), figures.per_s("fetches")) == (5, 1.0, 0.0)
    assert figures.bytes_per_s() == 1_501_000
    assert figures.text() == "1.0 req/s + 1.5 GETs/s, 1.5 MB/s"


def test_an_unknown_kind_is_a_bug_not_a_new_counter() -> None:
    with pytest.raises(ValueError, match="unknown probe load kind 'gets'"):
        ProbeLoad().add("gets")


def test_counts_from_many_threads_are_exact() -> None:
    load = ProbeLoad()

    def count() -> None:
        for _ in range(20_000):
            load.add("object_gets", 2)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load.snapshot() == ({"object_gets": 80_000}, {"object_gets": 160_000})


def test_texts() -> None:
    assert LoadFigures(10.0, {}, {}).text() == "no requests"
    assert LoadFigures(0.0, {"fetches": 3}, {"fetches": 9}).per_s("fetches") == 0.0
    assert [byte_rate(v) for v in (12, 14_200, 3_210_000, 2.5e9)] == ["12 B/s", "14 kB/s", "3.2 MB/s", "2.5 GB/s"]
