"""HTML reporter: one self-contained page per run, for people who read latency as pictures.

The page has no script and loads nothing (inline CSS and SVG; a Content-Security-Policy forbids any
fetch), so it opens offline, from an e-mail or a CI artifact. Top to bottom: the verdict banner with
every check (status, observed vs threshold, detection power), the per-stage figures, the latency CDF
per stage with the thresholds drawn, a waterfall of per-stage p50/p95/p99, every canary's latency over
its send time (fault windows shaded), delivery steps against the feed, lost canaries by the stage each
got stuck at, field differences, injection pacing, notes, and the run's settings (secrets masked by
the engine). Each chart has a text alternative and its data table beside it; charts stay a few
kilobytes at any run size (see :mod:`~pipeline_check.reporting.plotdata`). A run that aborts still
gets a page, with the error and the checks finished so far.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from pipeline_check.canary.tags import label
from pipeline_check.reporting import charts
from pipeline_check.reporting.charts import ShadedSpan
from pipeline_check.reporting.document import DocumentReporter
from pipeline_check.reporting.json import iso_utc, tool_version
from pipeline_check.reporting.markup import Cell, Classed, count, latency, paragraph, scroll, section, table
from pipeline_check.verdict.events import RunAborted, RunFinished, RunStarted
from pipeline_check.verdict.results import CheckResult, format_value
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import RunSummary

__all__ = ["HtmlReporter", "ShadedSpan", "render"]

MAX_DIFFS = 100
ABORTED = "aborted"
CSS = """
:root{--ok:#1a7f37;--na:#6e7781;--inc:#9a6700;--bad:#cf222e;--ink:#1f2328;--mute:#57606a;--line:#d0d7de}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:#f6f8fa}
header,main,footer{max-width:1360px;margin:0 auto;padding:0 16px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:0 0 8px}
.facts{color:var(--mute);margin:0}
section,.banner{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:16px 0}
.banner{border-left:10px solid var(--na)}
.banner.passed{border-left-color:var(--ok)}.banner.inconclusive{border-left-color:var(--inc)}
.banner.failed,.banner.aborted{border-left-color:var(--bad)}
.verdict{font-size:26px;font-weight:700;letter-spacing:.04em}
.passed .verdict,td.passed{color:var(--ok)}.failed .verdict,.aborted .verdict,td.failed{color:var(--bad)}
.inconclusive .verdict,td.inconclusive{color:var(--inc)}td.not-applicable{color:var(--na)}
td.passed,td.failed,td.inconclusive,td.not-applicable{font-weight:600}
.error{color:var(--bad);font-weight:600}
.pair{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0;flex:0 1 640px;min-width:0}figure svg{max-width:100%;height:auto;display:block}
figcaption{color:var(--mute);font-size:13px;margin-top:4px}
.scroll{flex:1 1 360px;max-height:460px;overflow:auto}
table.data{border-collapse:collapse;font-size:13px;margin:4px 0}
table.data caption{text-align:left;color:var(--mute);padding-bottom:4px}
table.data th,table.data td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:right;vertical-align:top}
table.data thead th{background:#f6f8fa;position:sticky;top:0}
table.data th[scope=row],#checks th,#checks td,#settings td{text-align:left}
svg text{font-size:11px;fill:var(--mute)}svg .label{font-size:12px;fill:var(--ink)}
svg .grid{stroke:#eaeef2}svg .frame{stroke:#8c959f;fill:none}
.series.line path{fill:none!important;stroke-width:2}.series.dashed path{stroke-dasharray:6 4}
.series.dots path{stroke-width:4;stroke-linecap:round;fill:none}
.series.bars path{stroke:none!important}
.marker path{stroke-width:1.5;stroke-dasharray:4 3;fill:none!important}.marker text{font-weight:600}
.band rect{fill:#ffe08a;fill-opacity:.45}.band text{fill:var(--inc)}
.c0 path{stroke:#0969da;fill:#0969da}.c0 text{fill:#0969da}.c1 path{stroke:#bc4c00;fill:#bc4c00}.c1 text{fill:#bc4c00}
.c2 path{stroke:#1a7f37;fill:#1a7f37}.c2 text{fill:#1a7f37}.c3 path{stroke:#8250df;fill:#8250df}.c3 text{fill:#8250df}
.c4 path{stroke:#bf3989;fill:#bf3989}.c4 text{fill:#bf3989}.c5 path{stroke:#0a7b83;fill:#0a7b83}.c5 text{fill:#0a7b83}
.c6 path{stroke:#953800;fill:#953800}.c6 text{fill:#953800}.c7 path{stroke:#57606a;fill:#57606a}.c7 text{fill:#57606a}
.lost path{stroke:#cf222e;fill:#cf222e}
.wp99 path{fill:#c8dcf5}.wp95 path{fill:#74a7e6}.wp50 path{fill:#0a58ca}
footer{color:var(--mute);font-size:12px;padding-bottom:24px}
"""
# nothing may be fetched or run: the page is one file, whatever a hostile string in it says
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _css_class(status: str) -> str:
    return status.replace(" ", "-")


def _status_counts(results: Sequence[CheckResult]) -> str:
    return ", ".join(
        f"{sum(r.status == s for r in results)} {s.label}" for s in Status if any(r.status == s for r in results)
    )


def _power(result: CheckResult) -> str:
    return "—" if result.rate_bound is None else f"rate < {result.rate_bound:.2f}% (95%)"


def banner(verdict: str, exit_code: int, results: Sequence[CheckResult], extra: str = "", error: str = "") -> str:
    """The verdict, the exit code and every check: status, observed vs threshold, detection power."""
    css = _css_class(verdict)
    counts = _status_counts(results) or "no check finished"
    rows: list[list[Cell]] = [
        [
            r.threshold,
            Classed(r.status.label, _css_class(r.status.label)),
            r.observed_text,
            count(r.samples),
            _power(r),
            r.detail,
        ]
        for r in results
    ]
    attrs = [{"data-status": r.status.label, "data-threshold": r.threshold} for r in results]
    checks = table(
        ["threshold", "status", "observed", "samples", "detection power", "detail"],
        rows,
        caption="checks: observed against each threshold",
        row_attrs=attrs,
        id_="checks",
    )
    return (
        f'<section id="verdict" class="banner {css}" aria-labelledby="verdict-h">'
        f'<h2 id="verdict-h"><span class="verdict" data-verdict="{escape(verdict)}">{escape(verdict.upper())}</span> '
        f'<span class="exit" data-exit-code="{exit_code}">exit {exit_code}</span></h2>'
        f"<p>{escape(counts)}{escape(extra)}</p>"
        + (f'<p class="error" id="error">{escape(error)}</p>' if error else "")
        + f"{scroll('checks', checks)}</section>"
    )


def _header(started: RunStarted | None, verdict: str) -> str:
    if started is None:
        return "<header><h1>pipeline-check report</h1></header>"
    background = f" over {started.background_rate:g}/s background" if started.background_rate else ""
    facts = (
        f"{started.run_id} · scenario {started.scenario or '(none)'} · {started.count:,} canaries at "
        f"{started.rate:g}/s{background} · from {started.source} through {' → '.join(started.stages)} · "
        f"started {iso_utc(started.started_at)}"
    )
    return f'<header><h1>pipeline-check report: {escape(verdict)}</h1><p class="facts">{escape(facts)}</p></header>'


def stage_figures(done: RunFinished, s: RunSummary) -> str:
    """Per stage: reached, extra copies, retractions, hop latency percentiles, probe resolution and load."""
    rows: list[list[Cell]] = []
    for st in s.stages:
        resolution = done.resolution.get(st.name)
        load = done.probe_load.get(st.name)
        rows.append(
            [
                st.name,
                st.upstream,
                f"{st.reached:,}/{s.injected:,}",
                count(st.extra_copies),
                count(st.retracted),
                *(latency(st.latency.get(p)) for p in ("p50", "p95", "p99", "max")),
                f"±{format_value(st.resolution_s, 'latency')}",
                _unmeasured(st.latency),
                latency(st.since_injection.get("p99")),
                "—" if resolution is None else latency(resolution),
                "—" if load is None else load.text(),
            ]
        )
    rows.append(
        [
            f"e2e ({s.final})",
            "injection",
            f"{s.delivered:,}/{s.injected:,}",
            "",
            "",
            *(latency(s.e2e.get(p)) for p in ("p50", "p95", "p99", "max")),
            f"±{format_value(s.e2e_resolution_s, 'latency')}",
            _unmeasured(s.e2e),
            latency(s.e2e.get("p99")),
            "",
            "",
        ]
    )
    figures = table(
        [
            "stage",
            "from",
            "reached",
            "extra copies",
            "retracted",
            "p50",
            "p95",
            "p99",
            "max",
            "known to",
            "unmeasured",
            "since injection p99",
            "probe resolution",
            "probe load",
        ],
        rows,
        caption="latencies count undelivered canaries as never arriving, exactly as the checks do; those found only "
        "by a last look have no measured latency (unmeasured); probe load: what each probe asked of the system it "
        "watches, per second of the run",
    )
    return section("stages", "Stages", figures, _coverage(s), _counts(s))


def _unmeasured(stats: Mapping[str, float]) -> str:
    return count(int(stats.get("unmeasured", 0)))


def _coverage(s: RunSummary) -> str:
    rows: list[list[Cell]] = [
        [f"{st.name} p{c.shard}", count(c.seen), count(c.delivered)] for st in s.stages for c in st.shards
    ]
    if not rows:
        return ""
    return table(["partition", "canaries seen", "of them delivered"], rows, caption="canaries per partition")


def _counts(s: RunSummary) -> str:
    incomplete: list[list[Cell]] = [[f"never seen at {name}", count(n)] for name, n in s.incomplete.items()]
    rows: list[list[Cell]] = [
        ["lost", count(s.lost)],
        ["duplicated canaries", count(s.duplicates)],
        ["corrupted canaries", count(s.corrupted) if s.compared else "not compared"],
        ["retracted canaries", count(s.retracted)],
        ["out of order", "n/a" if s.out_of_order is None else f"{s.out_of_order:,} (at {', '.join(s.order_stages)})"],
        *incomplete,
        ["unexpected tags of this run", count(s.unexpected)],
        ["other runs' canaries seen", count(s.foreign)],
        ["settled after the last delivery", format_value(s.settle_s, "latency")],
    ]
    return table(["what", "canaries"], rows, caption="counts")


def field_diffs(s: RunSummary) -> str:
    title = "Field differences"
    if not s.compared:
        return section("diffs", title, paragraph("No stage compares fields (set `fields` on a stage)."))
    if not s.diffs:
        return section("diffs", title, paragraph("Every compared field matched what was sent."))
    rows: list[list[Cell]] = [
        [
            label(d.tag), d.stage, d.field, str(d.expected), str(d.actual),
            "as first shown" if d.changed_after_s is None
            else f"changed from {d.previous} {format_value(d.changed_after_s, 'latency')} after first seen",
        ]
        for d in s.diffs[:MAX_DIFFS]
    ]  # fmt: skip
    shown = f"first {MAX_DIFFS} of {len(s.diffs):,}" if len(s.diffs) > MAX_DIFFS else f"all {len(s.diffs):,}"
    return section(
        "diffs",
        title,
        paragraph(
            f"{s.corrupted:,} {'canary' if s.corrupted == 1 else 'canaries'} arrived with fields that differ from "
            f"what was sent ({shown} differences)."
        ),
        table(["canary", "stage", "field", "sent", "got", "when"], rows, caption="fields that differ"),
    )


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, str):
        yield prefix, value
    else:
        yield prefix, json.dumps(value, default=str)


def settings(config: Mapping[str, Any]) -> str:
    rows: list[list[Cell]] = [[key, value] for key, value in _flatten(config)]
    if not rows:
        return ""
    return section(
        "settings",
        "Settings",
        scroll("settings", table(["setting", "value"], rows, caption="the run settings, secrets masked")),
    )


def notes(items: Sequence[str]) -> str:
    if not items:
        return ""
    return section("notes", "Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in items) + "</ul>")


def _page(title: str, *parts: str) -> str:
    footer = (
        f"pipeline-check {tool_version()} · one self-contained file: no script, nothing fetched · "
        f"written {iso_utc(time.time())}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        + "".join(parts)
        + f"<footer><p>{escape(footer)}</p></footer></body></html>\n"
    )


def render(
    started: RunStarted | None,
    end: RunFinished | RunAborted,
    checks: Sequence[CheckResult] = (),
    windows: Sequence[ShadedSpan] = (),
) -> str:
    """The page of a run that finished (or aborted: ``checks`` are those finished before it did)."""
    config = started.config if started is not None else {}
    run_id = started.run_id if started is not None else ""
    if isinstance(end, RunAborted):
        return _page(
            f"pipeline-check {ABORTED}: {run_id}",
            _header(started, ABORTED),
            "<main>",
            banner(ABORTED, int(end.exit_code), checks, error=end.reason),
            settings(config),
            "</main>",
        )
    verdict = end.verdict.label
    s = end.summary
    book = end.book
    if s is None:  # a passive run: no canary to draw; its sampled figures are in the JSON report
        return _page(
            f"pipeline-check {verdict}: {run_id}",
            _header(started, verdict),
            "<main>",
            banner(verdict, int(end.exit_code), end.results, extra=f" · {end.duration:.1f}s"),
            paragraph("A passive run: nothing was injected; the sampled figures are in the JSON report."),
            notes(end.notes),
            settings(config),
            "</main>",
        )
    # the scenario's fault windows unless the caller shades others; one never undone runs to the end
    windows = windows or [
        ShadedSpan(f.start_s, f.end_s if math.isfinite(f.end_s) else end.duration, f.label) for f in s.faults
    ]
    if book is None:
        pictures = [paragraph("This run carried no trace book: only its figures are shown.")]
    else:
        pictures = [
            charts.latency_cdf(s, book, end.results),
            charts.waterfall(s),
            charts.latency_over_time(s, book, windows),
            charts.delivery(s, book),
            charts.lost(s, book.stages),
            field_diffs(s),
            charts.pacing(s, book),
        ]
    return _page(
        f"pipeline-check {verdict}: {run_id or s.run}",
        _header(started, verdict),
        "<main>",
        banner(verdict, int(end.exit_code), end.results, extra=f" · {end.duration:.1f}s"),
        stage_figures(end, s),
        *pictures,
        notes(end.notes),
        settings(config),
        "</main>",
    )


class HtmlReporter(DocumentReporter):
    """Writes the run's HTML page to ``path`` when the run finishes or aborts; ``windows`` are spans
    of the run to shade (seconds since the first injection; default: the scenario's faults)."""

    def __init__(self, path: Path, setting: str = "--html", windows: Sequence[ShadedSpan] = ()) -> None:
        super().__init__(path, setting)
        self.windows = tuple(windows)

    def render(self, started: RunStarted | None, end: RunFinished | RunAborted, checks: list[CheckResult]) -> str:
        return render(started, end, checks, self.windows)
