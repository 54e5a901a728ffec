"""BENCHMARKS.md's results section is what the bench run wrote from its report (``benchmarks/results.json``),
never edited by hand; and the section shows every figure with its goal, whether it was met and the load it
was taken under."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.common import Spread
from benchmarks.document import BEGIN, DOCUMENT, END, RESULTS, publish, replaced, section


def report() -> dict[str, Any]:
    machine = {"nproc": 2, "ram_gib": 23.5, "cpu_model": "Xeon", "os": "Linux 6", "python": "3.11.7",
               "java": "openjdk 17", "kafka": "4.1.2"}  # fmt: skip
    figure = {
        "title": "Time to verdict",
        "headline": "0.12 (0.10 to 0.15) s after the settle window | 2.0 s of settle",
        "goal": "<= 0.2 s",
        "met": True,
        "values": {},
        "notes": "",
        "seconds": 61.2,
        "load": {"busy_cores": 1.4, "cores": 2, "loadavg_1m": [3.1, 4.2]},
        "taken_at": "2026-12-07T03:00:00+0000",
    }
    missed = figure | {"title": "Iceberg REST", "headline": "x1.4", "met": False, "load": {}}
    return {"schema_version": 1, "machine": machine, "figures": {"a": figure, "b": missed}, "taken_at": "then",
            "seconds": 754.0}  # fmt: skip


def test_the_document_shows_the_committed_results() -> None:
    text = DOCUMENT.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    written = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert written == section(json.loads(RESULTS.read_text())), (
        "BENCHMARKS.md's results were edited by hand or "
        "are stale: run `make bench` (it rewrites them from reports/bench.json)"
    )


def test_the_section_has_a_row_per_figure_with_its_load() -> None:
    text = section(report())
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert rows == [
        "| Time to verdict | 0.12 (0.10 to 0.15) s after the settle window \\| 2.0 s of settle | <= 0.2 s | yes | "
        "1.4 of 2 (3.1 → 4.2) | 61 s |",
        "| Iceberg REST | x1.4 | <= 0.2 s | **no** | not recorded | 61 s |",
    ]
    assert "The run took 12 min 34 s" in text and "median of 3 rounds" in text


def test_publishing_rewrites_only_the_section(tmp_path: Any) -> None:
    document, results = tmp_path / "B.md", tmp_path / "r.json"
    document.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## What each figure measures\n")
    publish(report(), document, results)
    text = document.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("\n\n## What each figure measures\n")
    assert "old table" not in text and json.loads(results.read_text()) == report()
    with pytest.raises(ValueError, match="no results section"):
        replaced("# nothing here", report())


def test_a_spread_is_the_median_of_its_rounds() -> None:
    spread = Spread.of([0.3, 0.1, 0.2])
    assert (spread.median, spread.low, spread.high) == (0.2, 0.1, 0.3)
    assert spread.text() == "0.20 (0.10 to 0.30)"
    assert spread.to_json(1) == {"median": 0.2, "min": 0.1, "max": 0.3, "rounds": [0.3, 0.1, 0.2]}
    with pytest.raises(ValueError):
        Spread.of([])
