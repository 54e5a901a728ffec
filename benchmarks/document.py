"""BENCHMARKS.md's results section, written from the bench report by the bench run itself, so it is never stale.

``python -m benchmarks`` writes ``reports/bench.json``, copies it to ``benchmarks/results.json`` (kept in the
repository: the source of the table) and rewrites the section of BENCHMARKS.md between the two markers from
it. ``tests/unit/test_benchmarks_document.py`` checks the section matches the copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "benchmarks" / "results.json"
BEGIN = (
    "<!-- results: written by `python -m benchmarks` from reports/bench.json (copied to benchmarks/results.json);"
    " do not edit by hand -->"
)
END = "<!-- end of results -->"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load(figure: dict[str, Any]) -> str:
    load = figure.get("load") or {}
    if not load:
        return "not recorded"
    before, after = load["loadavg_1m"]
    return f"{load['busy_cores']:g} of {load['cores']} ({before:g} → {after:g})"


def section(report: dict[str, Any]) -> str:
    """The results section (markers included) for a bench report."""
    m = report["machine"]
    minutes, seconds = divmod(round(report.get("seconds", 0)), 60)
    lines = [
        BEGIN,
        "",
        f"Taken {report.get('taken_at', 'at an unknown time')} on **{m['nproc']} cores**, {m['ram_gib']} GiB RAM, "
        f"{m['cpu_model']} ({m['os']}), Python {m['python']}, {m['java']}, Apache Kafka {m['kafka']}. "
        f"The run took {minutes} min {seconds} s.",
        "",
        "Each result is the median of 3 rounds, the lowest and highest round in brackets. *Box busy* is how many of "
        "the machine's cores were busy while the figure was taken, other tenants included, with the 1-minute load "
        "average before → after.",
        "",
        "| figure | result | goal | met | box busy (load avg) | took |",
        "|---|---|---|---|---|---|",
    ]
    for figure in report["figures"].values():
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    figure["title"],
                    figure["headline"],
                    figure["goal"],
                    "yes" if figure["met"] else "**no**",
                    _load(figure),
                    f"{figure.get('seconds', 0):.0f} s",
                )
            )
            + " |"
        )
    lines += ["", END]
    return "\n".join(lines)


def replaced(document: str, report: dict[str, Any]) -> str:
    """``document`` with its results section written from ``report``."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"BENCHMARKS.md has no results section between {BEGIN!r} and {END!r}")
    return document[:start] + section(report) + document[end + len(END) :]


def publish(report: dict[str, Any], document: Path = DOCUMENT, results: Path = RESULTS) -> None:
    """Copy ``report`` beside the document and rewrite the document's results section from it."""
    results.write_text(json.dumps(report, indent=2) + "\n")
    document.write_text(replaced(document.read_text(), report))
