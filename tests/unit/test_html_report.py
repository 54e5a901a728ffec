"""The HTML report on synthetic runs: well-formed, self-contained, bounded, escaped, every chart beside
its table, and the figures it draws match the run's."""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from pipeline_check.canary.fidelity import FieldDiff
from pipeline_check.cli import main
from pipeline_check.config import load_config
from pipeline_check.core.errors import ConfigError, ExitCode
from pipeline_check.reporting import plotdata as pd
from pipeline_check.reporting.html import HtmlReporter, ShadedSpan, render
from pipeline_check.reporting.registry import build_handlers
from pipeline_check.verdict.events import RunAborted
from pipeline_check.verdict.status import Status
from tests.support import memory

if TYPE_CHECKING:
    from conftest import SyntheticRun  # tests/unit/conftest.py

MakeRun = Callable[..., "SyntheticRun"]
THRESHOLDS = ("e2e.p99 < 30s", "stage.api.p95 < 10s", "lost == 0", "duplicates == 0", "throughput >= 90%")
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source", "area", "base", "embed", "track"}
HOSTILE = '<script>alert("x")</script>'


def drawn(d: str) -> int:
    """Points in SVG path data as the report draws them: a dot or a box starts with M, a line goes on
    with L; a step line starts at its origin (not a point) and rises (V) once per point."""
    return len(re.findall("[MLV]", d)) - ("V" in d)


class Page(HTMLParser):
    """Checks nesting as it parses (every element closed, in order) and collects what the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.series: dict[str, dict[str, int]] = {}  # chart -> series name -> points
        self.path_points: dict[str, dict[str, int]] = {}  # chart -> series name -> M commands drawn
        self.text: list[str] = []
        self._chart: str | None = None
        self._series: str | None = None
        self.feed(text)
        self.close()
        if self.open:
            self.problems.append(f"never closed: {self.open}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "svg":
            self._chart = a.get("data-chart", "?")
        if tag == "g" and "data-series" in a and self._chart is not None:
            self._series = a["data-series"]
            self.series.setdefault(self._chart, {})[self._series] = int(a["data-points"])
        if tag == "path" and self._series is not None and self._chart is not None:
            self.path_points.setdefault(self._chart, {})[self._series] = drawn(a.get("d", ""))
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()
        if tag == "svg":
            self._chart = None
        if tag == "g":
            self._series = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def charts(self) -> list[str]:
        return [a["data-chart"] for a in self.all("svg")]


def page_of(run: SyntheticRun, **kwargs: object) -> tuple[str, Page]:
    text = render(run.started, run.finished, run.results, **kwargs)  # type: ignore[arg-type]
    page = Page(text)
    assert not page.problems, page.problems[:5]
    return text, page


@pytest.fixture
def lossy(make_run: MakeRun) -> SyntheticRun:
    """200 canaries: 3 lost (one before kafka, two after iceberg), one duplicated, one corrupted."""
    return make_run(
        lost={5: "source", 7: "iceberg", 9: "iceberg"}, duplicates={"kafka": [11]}, corrupt=[12], thresholds=THRESHOLDS
    )


def test_the_page_is_well_formed_and_fetches_nothing(lossy: SyntheticRun) -> None:
    text, page = page_of(lossy)
    assert text.startswith("<!DOCTYPE html>")
    assert not page.all("script") and not page.all("link") and not page.all("img") and not page.all("iframe")
    for _, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
            assert "http" not in attrs.get(name, "") and "//" not in attrs.get(name, ""), (name, attrs)
    assert "url(" not in text and "@import" not in text
    csp = [a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_every_chart_has_its_table_and_a_text_alternative(lossy: SyntheticRun) -> None:
    _, page = page_of(lossy)
    assert page.charts == ["cdf", "waterfall", "timeline", "delivery", "lost", "pacing"]
    tables = [a["data-for"] for a in page.all("table") if "data-for" in a]
    assert tables == page.charts
    ids = {a["id"] for _, a in page.tags if "id" in a}
    for svg in page.all("svg"):
        assert svg["role"] == "img"
        labelled = svg["aria-labelledby"].split()
        assert labelled == [f"{svg['data-chart']}-title", f"{svg['data-chart']}-desc"]
        assert set(labelled) <= ids


def test_the_charts_draw_the_runs_figures(lossy: SyntheticRun) -> None:
    _, page = page_of(lossy)
    # every series draws as many points as it says it holds
    for chart, series in page.series.items():
        for name, points in series.items():
            assert page.path_points[chart][name] == points, (chart, name)
    cdf = page.series["cdf"]
    assert list(cdf) == ["kafka", "consumer", "iceberg", "api", "e2e"]
    assert cdf["e2e"] == 197  # one point per delivered canary (fewer than CDF_POINTS)
    assert page.series["timeline"]["arrived"] == 197 and page.series["timeline"]["never arrived"] == 3
    assert page.series["waterfall"] == {"p99": 5, "p95": 5, "p50": 5}
    assert list(page.series["delivery"]) == ["sent", "delivered at api"]
    assert page.series["delivery"]["sent"] == 200  # one step per send time
    assert page.series["lost"] == {"stuck": 4}  # stuck after source, kafka, consumer, iceberg
    # the two latency thresholds are drawn on the CDF
    markers = "".join(page.text)
    assert "e2e.p99 < 30s" in markers and "stage.api.p95 < 10s" in markers


def test_the_stage_table_shows_each_probes_load(lossy: SyntheticRun) -> None:
    _, page = page_of(lossy)
    text = " ".join(page.text)
    assert "probe load" in text
    assert "0.48 loads/s + 14 GETs/s, 200 kB/s" in text and "2.1 req/s, 2.1 kB/s" in text


def test_the_banner_shows_every_check_as_judged(lossy: SyntheticRun) -> None:
    text, page = page_of(lossy)
    verdict = [a["data-verdict"] for a in page.all("span") if "data-verdict" in a]
    assert verdict == [lossy.finished.verdict.label] == ["failed"]
    rows = [(a["data-threshold"], a["data-status"]) for a in page.all("tr") if "data-status" in a]
    assert rows == [(r.threshold, r.status.label) for r in lossy.results]
    lost = next(r for r in lossy.results if r.threshold == "lost == 0")
    assert lost.status == Status.FAILED and lost.rate_bound is not None
    assert f"rate &lt; {lost.rate_bound:.2f}% (95%)" in text  # detection power beside the check
    assert 'data-exit-code="1"' in text


@pytest.mark.parametrize(
    "shape",
    [
        {"count": 1},
        {"count": 20, "lost": dict.fromkeys(range(20), "source")},
        {"count": 20, "stages": ("kafka",), "compare": False},
    ],
    ids=["one canary", "every canary lost", "one stage"],
)
def test_degenerate_runs_still_render(make_run: MakeRun, shape: dict[str, object]) -> None:
    run = make_run(**shape)
    _, page = page_of(run)
    assert [a["data-for"] for a in page.all("table") if "data-for" in a] == page.charts
    assert page.charts[0] == "cdf" or "No canary arrived at any stage" in "".join(page.text)


def test_ten_thousand_canaries_stay_small(make_run: MakeRun) -> None:
    rng = np.random.default_rng(3)
    stages = ("source", "kafka", "iceberg")
    lost = {int(seq): stages[i % 3] for i, seq in enumerate(rng.choice(10_000, 2_000, replace=False))}
    run = make_run(count=10_000, lost=lost, corrupt=range(0, 10_000, 7), duplicates={"kafka": range(0, 10_000, 3)})
    text, page = page_of(run)
    size = len(text.encode())
    assert size < 500_000, size
    timeline = page.series["timeline"]
    assert timeline["arrived"] + timeline["never arrived"] <= pd.MAX_DOTS
    assert "of 10,000 canaries are drawn" in text  # and it says so
    assert all(points <= pd.CDF_POINTS for points in page.series["cdf"].values())
    assert page.series["delivery"]["sent"] <= pd.MAX_STEPS


def test_hostile_strings_are_escaped(lossy: SyntheticRun) -> None:
    summary = dataclasses.replace(
        lossy.summary,
        stuck={"kafka": [HOSTILE]},
        diffs=[FieldDiff("api", 1, "price", HOSTILE, "<b>")],
    )
    finished = dataclasses.replace(lossy.finished, summary=summary, notes=(f"note {HOSTILE}",))
    started = dataclasses.replace(lossy.started, config={"stages": {"api": {"query": HOSTILE}}}, scenario=HOSTILE)
    text = render(started, finished, lossy.results)
    page = Page(text)
    assert not page.problems
    assert "<script" not in text.lower() and "<b>" not in text
    assert text.count("&lt;script&gt;") >= 4  # the note, the stuck tag, the diff, the setting, the scenario
    assert HOSTILE in "".join(page.text)  # shown as text


def test_fault_windows_are_shaded(lossy: SyntheticRun) -> None:
    text, page = page_of(lossy, windows=(ShadedSpan(0.5, 1.0, "consumer stopped"),))
    bands = [a for a in page.all("g") if a.get("class") == "band fault"]
    assert len(bands) == 1 and "consumer stopped (0.5s to 1s)" in text


def test_an_aborted_run_still_gets_a_page(lossy: SyntheticRun) -> None:
    end = RunAborted("source.port=1 (int): nobody listens; start the pipe", ExitCode.USAGE_ERROR)
    text = render(lossy.started, end, lossy.results[:2])
    page = Page(text)
    assert not page.problems
    assert [a["data-verdict"] for a in page.all("span") if "data-verdict" in a] == ["aborted"]
    assert "nobody listens" in text and 'data-exit-code="2"' in text
    assert len([a for a in page.all("tr") if "data-status" in a]) == 2 and page.charts == []


def test_reporter_writes_on_finish_and_checks_the_path_first(tmp_path: Path, lossy: SyntheticRun) -> None:
    with pytest.raises(ConfigError, match="--html"):
        HtmlReporter(tmp_path)
    path = tmp_path / "deep" / "report.html"
    reporter = HtmlReporter(path)
    for event in lossy.events:
        reporter.handle(event)
    reporter.close()
    assert list(path.parent.iterdir()) == [path]  # written atomically
    assert not Page(path.read_text()).problems
    kinds = [type(h).__name__ for h in build_handlers(None, {"html": tmp_path / "r.html"})]
    assert kinds == ["HtmlReporter"]


PIPELINE = """
[source]
type = "memory"

[stages.kafka]
type = "memory"
delay = 0.005
shards = 2

[stages.api]
type = "memory"
delay = 0.02
drop = [3]
fields = {{ price = "p:decimal" }}
{extra}
[load]
count = 60
rate = 300
settle = 0
drain_timeout = "1s"
{report}
"""


def test_cli_html_option_and_report_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    memory.register()
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE.format(extra="", report=f'[report]\nhtml = "{tmp_path / "from-config.html"}"\n'))
    assert load_config(config, {}).report.path("html") == tmp_path / "from-config.html"
    assert main(["validate", "-c", str(config)]) == ExitCode.VERDICT_FAILED  # canary 3 is dropped
    page = Page((tmp_path / "from-config.html").read_text())
    assert page.series["timeline"]["never arrived"] == 1 and page.series["lost"] == {"stuck": 2}
    assert main(["validate", "-c", str(config), "--html", str(tmp_path / "option.html")]) == ExitCode.VERDICT_FAILED
    assert (tmp_path / "option.html").exists()
    capsys.readouterr()


def test_cli_unreachable_endpoint_writes_an_aborted_page_without_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory.register()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing answers there
    secret = "s3cr3t-T0KEN"
    extra = f'[stages.web]\ntype = "api"\nupstream = "api"\nbase_url = "http://u:{secret}@127.0.0.1:{port}"\n'
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE.format(extra=extra, report=""))
    html = tmp_path / "v.html"
    assert main(["validate", "-c", str(config), "--html", str(html)]) == ExitCode.USAGE_ERROR
    text = html.read_text()
    assert 'data-verdict="aborted"' in text and "does not answer" in text
    assert secret not in text
    capsys.readouterr()


# -- what the charts are drawn from ------------------------------------------------------------------


def test_cdf_is_thinned_to_quantiles_that_keep_the_tail() -> None:
    samples = np.r_[np.linspace(0.01, 1.0, 9_990), np.full(10, np.inf)]
    curve = pd.cdf("e2e", samples)
    assert len(curve.points) <= pd.CDF_POINTS and curve.never == 10 and curve.total == 10_000
    xs = [x for x, _ in curve.points]
    assert xs == sorted(xs) and xs[-1] == 1.0  # the slowest arrival is drawn
    assert curve.points[-1][1] == pytest.approx(0.999)  # the curve tops out below the never-arrived
    # half the points are in the last percent of the arrivals
    assert sum(q >= 0.98 for _, q in curve.points) >= pd.CDF_POINTS // 2 - 1


def test_dots_keep_the_slowest_canary_of_every_bin() -> None:
    sent = np.linspace(0.0, 100.0, 10_000)
    latency = np.full(10_000, 0.5)
    spikes = [1_234, 5_001, 9_998]
    latency[spikes] = [7.0, np.inf, 3.0]
    dots = pd.dots(sent, latency, pd.Bins.over(100.0))
    assert dots.drawn <= pd.MAX_DOTS and dots.of == 10_000
    for seq in spikes:
        assert sent[seq] in dots.sent
    assert np.isinf(dots.latency).sum() == 1


def test_bins_are_round_and_cover_the_span() -> None:
    bins = pd.Bins.over(99.7)
    assert bins.width == 2.0 and len(bins.starts) <= pd.MAX_BINS and bins.starts[-1] + bins.width > 99.7
    assert pd.Bins.over(1.0, least=0.3).width == 0.5
    stats = pd.bin_stats(pd.Bins.over(10.0), np.array([0.1, 0.2, 9.9]), np.array([1.0, np.inf, 2.0]))
    assert stats.sent.sum() == 3 and stats.arrived.sum() == 2 and stats.p99[0] == 1.0


def test_running_counts_are_thinned_but_keep_both_ends() -> None:
    steps = pd.cumulative(np.r_[np.arange(5_000.0), np.nan], limit=100)
    assert steps.distinct == 5_000 and len(steps.points) == 100
    assert steps.points[0] == (0.0, 1) and steps.points[-1] == (4_999.0, 5_000)
    ties = pd.cumulative(np.array([1.0, 1.0, 2.0]))
    assert ties.points == [(1.0, 2), (2.0, 3)]


def test_page_text_reads_without_markup(lossy: SyntheticRun) -> None:
    _, page = page_of(lossy)
    words = re.sub(r"\s+", " ", " ".join(page.text))
    assert "3 of 200 canaries never reached api" in words
    assert "1 canary arrived with fields that differ" in words
