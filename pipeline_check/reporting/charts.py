"""The charts of the HTML report, each beside the table of the figures it draws.

Every chart reads a finished run's trace book and summary, draws a bounded number of points (see
:mod:`~pipeline_check.reporting.plotdata`) and says in its caption how it thinned them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from pipeline_check.reporting import plotdata, svg
from pipeline_check.reporting.markup import Cell, count, figure, latency, paragraph, section, table
from pipeline_check.trace.book import TraceBook
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.detection_power import CONFIDENCE, upper_bound
from pipeline_check.verdict.results import CheckResult, format_value
from pipeline_check.verdict.statistics import latency_stats
from pipeline_check.verdict.summary import RunSummary
from pipeline_check.verdict.thresholds import Threshold, parse_threshold

COLORS = 8  # CSS classes c0..c7
SHOWN_TAGS = 20  # tags listed per stage in the lost-canaries table
BAR_ROW = 26  # pixels per row of the bar charts


def color(i: int) -> str:
    return f"c{i % COLORS}"


def percent(share: float) -> str:
    return f"{share * 100:g}%"


@dataclass(frozen=True, slots=True)
class ShadedSpan:
    """A span of the run to shade (a fault injected, a service stopped): seconds since the first
    injection, and what happened."""

    start: float
    end: float
    label: str


def _quantile(t: Threshold) -> float | None:
    """The share of canaries a latency threshold's statistic names (p99 -> 0.99, max -> 1)."""
    agg = t.aggregate or ""
    if agg.startswith("p"):
        return float("0." + agg[1:])
    return 1.0 if agg == "max" else None


# -- latency CDF per stage ---------------------------------------------------------------------------


def latency_cdf(summary: RunSummary, book: TraceBook, results: Sequence[CheckResult]) -> str:
    """Per stage (hop from its upstream) and end to end: the share of canaries seen within a latency."""
    series = [(s.name, f"from {s.upstream}", book.hop_latencies(s.name)) for s in summary.stages]
    series.append(("e2e", f"since injection, at {summary.final}", book.latencies_since_injection(summary.final)))
    series = [(name, measured, samples[~np.isnan(samples)]) for name, measured, samples in series]  # measured only
    curves = [plotdata.cdf(name, samples) for name, _, samples in series]
    index = {c.name: i for i, c in enumerate(curves)}
    thresholds = [parse_threshold(r.threshold, book.stages) for r in results if r.kind == "latency"]
    xs = [v for c in curves for v, _ in c.points] + [t.value for t in thresholds]
    positive = [v for v in xs if v > 0]
    title = "Latency distribution per stage"
    if not positive:
        return section("cdf", title, paragraph("No canary arrived at any stage: there is no latency to draw."))
    (x0, x1), (y0, y1) = svg.plot_area()
    floor = max(min(positive), 1e-4)
    x = svg.Scale.decades(floor, max(positive), x0, x1)
    y = svg.Scale(0.0, 1.0, y0, y1)
    body = [
        svg.x_axis(x, y0, y1, svg.short_duration, "latency (log scale)", svg.HEIGHT),
        svg.y_axis(y, x0, x1, percent, "share of canaries"),
    ]
    for i, (c, (_, measured, _)) in enumerate(zip(curves, series, strict=True)):
        d = svg.polyline((x(v), y(q)) for v, q in c.points)
        body.append(svg.series(c.name, f"line {color(i)}", d, len(c.points), label=f"{c.name} ({measured})"))
    for row, t in enumerate(thresholds):
        q = _quantile(t)
        css = f"threshold {color(index[t.stage or 'e2e'])}"
        body.append(svg.vline(x(t.value), y0, y1, css, t.text, mark_y=None if q is None else y(q), row=row))
    below = sum(int(((s < floor) & np.isfinite(s)).sum()) for _, _, s in series)
    caption = (
        "Share of canaries seen within each latency, per stage (measured from its upstream stage) and end to "
        "end (since injection); log time axis. Each curve is drawn through at most "
        f"{plotdata.CDF_POINTS} quantiles, half of them in the last percent. A curve that stays below 100% "
        "counts canaries that never arrived. Vertical lines are the latency thresholds; the cross-bar marks "
        "the share of canaries a percentile threshold names."
        + (f" {below:,} latencies below {svg.short_duration(x.lo)} are drawn at the axis' left edge." if below else "")
    )
    rows: list[list[Cell]] = []
    for name, measured, samples in series:
        stats = latency_stats(samples)
        never = int(np.isinf(samples).sum())
        rows.append(
            [
                name,
                measured,
                count(len(samples)),
                count(never),
                *(latency(stats.get(p)) for p in ("p50", "p95", "p99", "max")),
            ]
        )
    data = table(
        ["series", "measured", "canaries", "never arrived", "p50", "p95", "p99", "max"],
        rows,
        caption="latency percentiles (never-arrived canaries count as infinitely late, as the checks count them)",
        data_for="cdf",
    )
    svg_text = svg.chart(
        "cdf",
        title,
        f"Cumulative latency distribution of {len(curves)} series on a log time axis, with "
        f"{len(thresholds)} latency thresholds marked. The table beside it gives the percentiles.",
        body,
    )
    return section("cdf", title, figure("cdf", svg_text, caption, data))


# -- waterfall of stage percentiles ------------------------------------------------------------------

LEVELS = ("p99", "p95", "p50")  # drawn back to front: the lightest, longest bar first


def waterfall(summary: RunSummary) -> str:
    """Each stage's hop latency placed after its upstream's median: p50, p95, p99 bars; then e2e."""
    title = "Where the time goes: per-stage p50, p95, p99"
    ends = {SOURCE: 0.0}
    rows: list[tuple[str, str, float, dict[str, float]]] = []
    for s in summary.stages:
        start = ends.get(s.upstream, 0.0)
        p50 = s.latency.get("p50", math.nan)
        ends[s.name] = start + p50 if math.isfinite(p50) else start
        rows.append((s.name, s.upstream, start, s.latency))
    rows.append((f"e2e ({summary.final})", "injection", 0.0, summary.e2e))
    reach = [start + v for _, _, start, stats in rows for p in LEVELS if math.isfinite(v := stats.get(p, math.nan))]
    if not reach:
        return section("waterfall", title, paragraph("No stage has a latency to draw."))
    height = svg.TOP + BAR_ROW * len(rows) + svg.BOTTOM
    left = 120
    y0 = height - svg.BOTTOM
    x = svg.Scale.linear(0.0, max(reach), left, svg.WIDTH - svg.RIGHT)
    body = [svg.x_axis(x, y0, svg.TOP, svg.short_duration, "seconds since injection (medians chained)", height)]
    for i, (name, _, _, _) in enumerate(rows):
        body.append(f'<text x="{left - 6}" y="{svg.TOP + BAR_ROW * i + 17}" text-anchor="end">{escape(name)}</text>')
    for level in LEVELS:
        boxes = []
        for i, (_, _, start, stats) in enumerate(rows):
            value = stats.get(level)
            if value is None:
                continue
            end = x.px_hi if math.isinf(value) else x(start + value)
            boxes.append((x(start), svg.TOP + BAR_ROW * i + 5, max(end - x(start), 1.0), BAR_ROW - 10.0))
        body.append(svg.series(level, f"w{level}", svg.rects(boxes), len(boxes), label=f"{level} of each row"))
    caption = (
        "Each stage's latency from its upstream stage, starting where its upstream's median ends: dark p50, "
        "then p95, light p99. The last row is end to end, since injection. A bar reaching the right edge is "
        "a percentile of canaries that never arrived."
    )
    data = table(
        ["stage", "from", "starts at", "p50", "p95", "p99"],
        [
            [name, up, latency(start), *(latency(stats.get(p)) for p in ("p50", "p95", "p99"))]
            for name, up, start, stats in rows
        ],
        caption="per-stage latency percentiles (from the upstream stage)",
        data_for="waterfall",
    )
    svg_text = svg.chart(
        "waterfall",
        title,
        f"Bar chart of {len(rows)} rows: p50, p95 and p99 latency of each stage after its upstream's median, "
        "and end to end. The table beside it gives the values.",
        body,
        height,
    )
    return section("waterfall", title, figure("waterfall", svg_text, caption, data))


# -- latency of every canary over its send time ------------------------------------------------------


def latency_over_time(summary: RunSummary, book: TraceBook, windows: Sequence[ShadedSpan]) -> str:
    """End-to-end latency of each canary (a bounded sample) against when it was sent, with each time
    bin's p99 and the fault windows shaded."""
    title = f"End-to-end latency over send time (at {summary.final})"
    sent = plotdata.since_start(book)
    lat = book.latencies_since_injection(summary.final)
    if not len(sent):
        return section("timeline", title, paragraph("No canary was injected."))
    span = max([float(sent.max()), *(w.end for w in windows)])
    # ten canaries a bin at least, so a bin's p99 is more than its one slowest canary
    bins = plotdata.Bins.over(float(sent.max()), least=10 * float(sent.max()) / len(sent))
    dots = plotdata.dots(sent, lat, bins)
    stats = plotdata.bin_stats(bins, sent, lat)
    (x0, x1), (y0, _) = svg.plot_area()
    never_y = svg.TOP + 6.0
    y_top = svg.TOP + 22.0
    arrived = lat[np.isfinite(lat) & (lat > 0)]
    lo, hi = (max(float(arrived.min()), 1e-4), float(arrived.max())) if len(arrived) else (1e-3, 1.0)
    x = svg.Scale.linear(0.0, span, x0, x1)
    y = svg.Scale.decades(lo, hi, y0, y_top)
    body = [svg.band(x(w.start), x(w.end), y0, never_y - 6, "fault", w.label) for w in windows]
    body += [
        svg.x_axis(x, y0, never_y - 6, svg.short_duration, "send time since the first canary", svg.HEIGHT),
        svg.y_axis(y, x0, x1, svg.short_duration, "latency (log scale)"),
        f'<text x="{x0 - 4}" y="{never_y + 4}" text-anchor="end">never</text>',
    ]
    ok = np.isfinite(dots.latency)
    body.append(
        svg.series(
            "arrived",
            "dots c0",
            svg.marks(zip(map(x, dots.sent[ok]), map(y, dots.latency[ok]), strict=True)),
            int(ok.sum()),
        )
    )
    body.append(
        svg.series("never arrived", "dots lost", svg.marks((x(s), never_y) for s in dots.sent[~ok]), int((~ok).sum()))
    )
    centers = bins.starts + bins.width / 2
    has = stats.arrived > 0
    body.append(
        svg.series(
            "p99 per bin",
            "line c1",
            svg.polyline(zip(map(x, centers[has]), map(y, stats.p99[has]), strict=True)),
            int(has.sum()),
        )
    )
    drawn = (
        f"All {dots.of:,} canaries are drawn."
        if dots.drawn == dots.of
        else f"{dots.drawn:,} of {dots.of:,} canaries are drawn: an even sample by send time plus the slowest "
        f"canary of each {svg.short_duration(bins.width)} bin, so no spike is "
        "sampled away; the table has every canary."
    )
    shaded = (
        " Shaded spans are fault windows: "
        + "; ".join(f"{w.label} ({w.start:g}s to {w.end:g}s)" for w in windows)
        + "."
        if windows
        else ""
    )
    caption = (
        f"Each dot is one canary: its latency from injection to {summary.final} (log scale) against when it "
        f"was sent. {drawn} Dots on the 'never' line never arrived. The line is the p99 of each "
        f"{svg.short_duration(bins.width)} bin.{shaded}"
    )
    rows: list[list[Cell]] = [
        [
            svg.short_duration(float(start)),
            count(stats.sent[i]),
            count(stats.arrived[i]),
            latency(float(stats.p50[i])),
            latency(float(stats.p99[i])),
            latency(float(stats.worst[i])),
        ]
        for i, start in enumerate(bins.starts)
    ]
    data = table(
        ["sent from", "canaries", "arrived", "p50", "p99", "max"],
        rows,
        caption=f"latency of the canaries sent in each {svg.short_duration(bins.width)} bin",
        data_for="timeline",
    )
    svg_text = svg.chart(
        "timeline",
        title,
        f"Scatter of {dots.drawn:,} canaries' end-to-end latency against send time, with the p99 of each "
        f"time bin as a line and {int((~ok).sum()):,} never-arrived canaries on a separate line. "
        "The table beside it gives the figures per time bin.",
        body,
    )
    return section("timeline", title, figure("timeline", svg_text, caption, data))


# -- delivery steps against the feed -----------------------------------------------------------------


def delivery(summary: RunSummary, book: TraceBook) -> str:
    """Canaries sent and canaries delivered at the final stage, counted over time."""
    title = f"Delivery at {summary.final} against the feed"
    sent_at = book.first_seen(SOURCE)
    if not len(sent_at):
        return section("delivery", title, paragraph("No canary was injected."))
    t0 = float(np.nanmin(sent_at))
    feed = plotdata.cumulative(sent_at - t0)
    got = plotdata.cumulative(book.first_seen(summary.final) - t0)
    end = max(t for t, _ in feed.points + got.points)
    (x0, x1), (y0, y1) = svg.plot_area()
    x = svg.Scale.linear(0.0, end, x0, x1)
    y = svg.Scale.linear(0.0, float(summary.injected), y0, y1)
    body = [
        svg.x_axis(x, y0, y1, svg.short_duration, "time since the first canary", svg.HEIGHT),
        svg.y_axis(y, x0, x1, svg.plain, "canaries so far"),
    ]
    for name, css, steps in (("sent", "line c0", feed), (f"delivered at {summary.final}", "line c2", got)):
        d = svg.steps(((x(t), y(c)) for t, c in steps.points), x(0.0), y(0.0))
        body.append(svg.series(name, css, d, len(steps.points)))
    tp = summary.throughput
    thinned = [
        f"{name} {s.distinct:,} steps thinned to {len(s.points):,}"
        for name, s in (("sent", feed), ("delivered", got))
        if len(s.points) < s.distinct
    ]
    caption = (
        f"Canaries sent (the feed) and delivered at {summary.final}, counted since the first injection; each "
        f"rise of the delivered line is one delivery step (a batch). Delivered throughput "
        f"{format_value(tp.delivered, 'rate')}"
        + (f" (last part of the run {format_value(tp.tail, 'rate')})" if tp.tail is not None else "")
        + f" at an achieved injection rate of {format_value(tp.injected_rate, 'rate')}, over {tp.steps:,} "
        "delivery steps."
        + (f" {tp.limited}." if tp.limited else "")
        + (f" Drawn: {', '.join(thinned)}." if thinned else "")
    )
    bins = plotdata.Bins.over(end)
    sent_sorted = np.sort(sent_at[~np.isnan(sent_at)] - t0)
    arrived = book.first_seen(summary.final)
    got_sorted = np.sort(arrived[~np.isnan(arrived)] - t0)
    edges = bins.starts + bins.width
    rows: list[list[Cell]] = [
        [svg.short_duration(float(e)), count(a), count(b)]
        for e, a, b in zip(
            edges,
            np.searchsorted(sent_sorted, edges, side="left"),
            np.searchsorted(got_sorted, edges, side="left"),
            strict=True,
        )
    ]
    data = table(
        ["before", "sent", f"delivered at {summary.final}"],
        rows,
        caption=f"canaries sent and delivered before each {svg.short_duration(bins.width)} mark",
        data_for="delivery",
    )
    svg_text = svg.chart(
        "delivery",
        title,
        f"Two step lines over time: canaries sent ({feed.distinct:,} steps) and delivered at {summary.final} "
        f"({got.distinct:,} steps). The table beside it gives the counts over time.",
        body,
    )
    return section("delivery", title, figure("delivery", svg_text, caption, data))


# -- injection pacing ---------------------------------------------------------------------------------


def pacing(summary: RunSummary, book: TraceBook) -> str:
    """Canaries sent per second in each time bin against the offered rate."""
    title = "Injection pacing"
    inj = summary.injection
    sent = plotdata.since_start(book)
    facts = (
        f"{inj.sent:,} canaries and {inj.background:,} background trades sent; offered "
        f"{format_value(inj.offered_rate, 'rate')}, achieved {format_value(inj.achieved_rate, 'rate')}; "
        f"lateness p99 {latency(inj.lateness_p99)}; {inj.pauses} pauses." + (f" {inj.limited}." if inj.limited else "")
    )
    if not len(sent):
        return section("pacing", title, paragraph(facts))
    span = float(sent.max())
    # a bin holds 10 scheduled canaries at least: fewer, and whole-canary steps read as jitter
    bins = plotdata.Bins.over(span, least=10 / inj.offered_rate)
    counts = bins.count(sent)
    # a canary takes 1/rate of the schedule: the last, partial bin's rate is over the time it covered
    covered = np.where(bins.starts + bins.width <= span, bins.width, span - bins.starts + 1 / inj.offered_rate)
    rates = counts / covered
    (x0, x1), (y0, y1) = svg.plot_area()
    x = svg.Scale.linear(0.0, float(bins.starts[-1] + bins.width), x0, x1)
    y = svg.Scale.linear(0.0, max(float(rates.max()), inj.offered_rate) * 1.1, y0, y1)
    body = [
        svg.x_axis(x, y0, y1, svg.short_duration, "time since the first canary", svg.HEIGHT),
        svg.y_axis(y, x0, x1, svg.plain, "canaries per second"),
    ]
    boxes = [
        (x(a), y(r), max(x(a + w) - x(a) - 1, 1.0), y0 - y(r))
        for a, w, r in zip(bins.starts, np.minimum(covered, bins.width), rates, strict=True)
    ]
    body.append(svg.series("sent per second", "bars c0", svg.rects(boxes), len(boxes)))
    offered = svg.polyline([(x0, y(inj.offered_rate)), (x1, y(inj.offered_rate))])
    body.append(svg.series("offered rate", "line dashed c3", offered, 2))
    caption = (
        f"Canaries sent per second in each {svg.short_duration(bins.width)} bin; the dashed line is the "
        f"offered rate. {facts}"
    )
    data = table(
        ["from", "canaries", "per second"],
        [
            [svg.short_duration(float(a)), count(c), f"{r:.1f}"]
            for a, c, r in zip(bins.starts, counts, rates, strict=True)
        ],
        caption="canaries sent per time bin",
        data_for="pacing",
    )
    svg_text = svg.chart(
        "pacing",
        title,
        f"Bar chart of the send rate in {len(boxes)} time bins against the offered rate of "
        f"{inj.offered_rate:g} per second. The table beside it gives the counts.",
        body,
    )
    return section("pacing", title, figure("pacing", svg_text, caption, data))


# -- lost canaries -------------------------------------------------------------------------------------


def lost(summary: RunSummary, stages: Sequence[str]) -> str:
    """Canaries that never reached the final stage, by the last stage each was seen at."""
    title = "Lost canaries"
    bound = 100 * upper_bound(summary.lost, summary.injected, CONFIDENCE) if summary.injected else 100.0
    power = f"loss rate < {bound:.2f}% (95%)"
    if not summary.lost:
        return section(
            "lost",
            title,
            paragraph(f"No canary lost: all {summary.injected:,} delivered at {summary.final}; {power}."),
        )
    order = [SOURCE, *(s for s in stages if s != summary.final)]
    order += [s for s in summary.stuck if s not in order]
    stuck = [(stage, summary.stuck.get(stage, [])) for stage in order]
    height = svg.TOP + BAR_ROW * len(stuck) + svg.BOTTOM
    left = 150
    y0 = height - svg.BOTTOM
    x = svg.Scale.linear(0.0, float(max(len(tags) for _, tags in stuck)), left, svg.WIDTH - svg.RIGHT)
    body = [svg.x_axis(x, y0, svg.TOP, svg.plain, "canaries", height)]
    boxes = []
    for i, (stage, tags) in enumerate(stuck):
        top = svg.TOP + BAR_ROW * i
        body.append(f'<text x="{left - 6}" y="{top + 17}" text-anchor="end">stuck after {escape(stage)}</text>')
        boxes.append((x(0.0), top + 5.0, max(x(float(len(tags))) - x(0.0), 1.0 if tags else 0.0), BAR_ROW - 10.0))
    body.append(svg.series("stuck", "bars lost", svg.rects(boxes), len(boxes), label="canaries stuck after each stage"))
    caption = (
        f"{summary.lost:,} of {summary.injected:,} canaries never reached {summary.final} ({power}), by the last "
        "stage each was seen at ('source': never seen anywhere)."
    )
    rows: list[list[Cell]] = []
    for stage, tags in stuck:
        more = f" … and {len(tags) - SHOWN_TAGS:,} more" if len(tags) > SHOWN_TAGS else ""
        rows.append([stage, count(len(tags)), ", ".join(tags[:SHOWN_TAGS]) + more])
    data = table(
        ["stuck after", "canaries", "tags"],
        rows,
        caption=f"lost canaries by the last stage reached (first {SHOWN_TAGS} tags of each)",
        data_for="lost",
    )
    svg_text = svg.chart(
        "lost",
        title,
        f"Bar chart: {summary.lost:,} lost canaries by the last of {len(stuck)} stages each reached. "
        "The table beside it lists them.",
        body,
        height,
    )
    return section("lost", title, figure("lost", svg_text, caption, data))
