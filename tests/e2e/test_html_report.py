"""The HTML report opened in a real browser: headless Chromium (Debian's package, driven by Playwright)
renders it with no console error and no request, its charts hold the run's points and series, and its
verdict banner says what the JSON report of the same run says. Screenshots go to ``reports/``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.config import load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.core.errors import EndpointError, ExitCode
from pipeline_check.pytest_plugin import Validator
from pipeline_check.reporting.html import HtmlReporter, ShadedSpan
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.plotdata import MAX_DOTS
from pipeline_check.runs.driver import Outcome, run_async
from pipeline_check.verdict.events import Handler
from tests.support import memory

pytestmark = [pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download is not reachable: Debian's Chromium, with nothing that phones home
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPORTS = Path(__file__).resolve().parents[2] / "reports"

# What the page shows, read in the browser: charts with their series (points as the SVG paths draw them:
# a dot or box starts with M, a line goes on with L, a step line rises with V after its origin), the
# tables beside them, and the verdict banner.
READ_PAGE = """() => {
  const drawn = d => (d.match(/[MLV]/g) || []).length - (d.includes('V') ? 1 : 0);
  const charts = [...document.querySelectorAll('svg.chart')].map(svg => ({
    name: svg.dataset.chart,
    title: svg.querySelector(':scope > title')?.textContent || '',
    width: svg.getBoundingClientRect().width,
    series: [...svg.querySelectorAll('g.series')].map(g => {
      const path = g.querySelector('path');
      const box = path.getBBox();
      return {name: g.dataset.series, points: Number(g.dataset.points),
              drawn: drawn(path.getAttribute('d')), extent: box.width + box.height};
    }),
  }));
  const tables = [...document.querySelectorAll('table[data-for]')].map(t => t.dataset.for);
  const verdict = document.querySelector('[data-verdict]');
  const checks = [...document.querySelectorAll('#checks tbody tr')].map(tr => (
    {threshold: tr.cells[0].textContent, status: tr.cells[1].textContent, observed: tr.cells[2].textContent}));
  return {charts, tables, checks, verdict: verdict.dataset.verdict, shown: verdict.textContent,
          exit: Number(document.querySelector('[data-exit-code]').dataset.exitCode),
          error: document.querySelector('#error')?.textContent || null,
          bands: document.querySelectorAll('svg g.band').length};
}"""


@dataclass
class Rendered:
    page: dict[str, Any]
    errors: list[str]
    requests: list[str]

    def chart(self, name: str) -> dict[str, dict[str, Any]]:
        charts = {c["name"]: c for c in self.page["charts"]}
        assert name in charts, f"no chart {name!r}; charts: {list(charts)}"
        return {s["name"]: s for s in charts[name]["series"]}


Open = Callable[[Path, str], Rendered]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Open]:
    """``open(html, shot_name)``: the page as headless Chromium renders it, with its console errors and
    every request it made; a full-page screenshot is saved as ``reports/<shot_name>.png``."""
    # a missing browser fails the test rather than skipping it: nothing rendered is nothing checked
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: run `make setup` as root (it runs apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright  # pinned in the dev extra that `make setup` installs

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:

            def open_page(html: Path, shot: str) -> Rendered:
                page = context.new_page()
                errors: list[str] = []
                requests: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: requests.append(r.url))
                page.goto(html.resolve().as_uri(), wait_until="load")
                read = page.evaluate(READ_PAGE)
                REPORTS.mkdir(exist_ok=True)
                page.screenshot(path=str(REPORTS / f"{shot}.png"), full_page=True)
                page.close()
                return Rendered(read, errors, requests)

            yield open_page
        finally:
            context.close()


def assert_renders_cleanly(shown: Rendered, html: Path) -> None:
    assert shown.errors == [], shown.errors
    assert shown.requests == [html.resolve().as_uri()], shown.requests  # the page itself, nothing else
    assert shown.page["tables"] == [c["name"] for c in shown.page["charts"]]  # every chart beside its table
    for chart in shown.page["charts"]:
        assert chart["title"] and chart["width"] > 300, chart["name"]
        for s in chart["series"]:
            assert s["drawn"] == s["points"], (chart["name"], s)
            assert s["points"] == 0 or s["extent"] > 0, (chart["name"], s)  # laid out, not just in the source


def assert_banner_matches(shown: Rendered, doc: dict[str, Any]) -> None:
    assert shown.page["verdict"] == doc["verdict"]
    assert shown.page["shown"] == doc["verdict"].upper()
    assert shown.page["exit"] == doc["exit_code"]
    checks = [
        {"threshold": c["threshold"], "status": c["status"], "observed": c["observed_text"]} for c in doc["checks"]
    ]
    assert shown.page["checks"] == checks


def test_report_of_a_real_validation_renders_in_chromium(validator: Validator, browser: Open, tmp_path: Path) -> None:
    html, report = tmp_path / "validation.html", tmp_path / "validation.json"
    validator("smoke", handlers=[JsonReporter(report), HtmlReporter(html)])
    doc = json.loads(report.read_text())
    shown = browser(html, "html-report-stack")
    shutil.copy(html, REPORTS / "html-report-stack.html")
    assert_renders_cleanly(shown, html)
    assert_banner_matches(shown, doc)
    stages = [s["name"] for s in doc["stages"]]
    lost = doc["lost"]["count"]
    expected = ["cdf", "waterfall", "timeline", "delivery", *(["lost"] if lost else []), "pacing"]
    assert [c["name"] for c in shown.page["charts"]] == expected
    assert list(shown.chart("cdf")) == [*stages, "e2e"]
    assert {name: s["points"] for name, s in shown.chart("waterfall").items()} == dict.fromkeys(
        ("p99", "p95", "p50"), len(stages) + 1
    )
    timeline = shown.chart("timeline")
    assert doc["injection"]["sent"] <= MAX_DOTS  # so every canary is a dot
    assert timeline["arrived"]["points"] == doc["e2e"]["reached"]
    assert timeline["never arrived"]["points"] == lost
    delivery = shown.chart("delivery")
    assert delivery["sent"]["points"] == doc["injection"]["sent"]  # one step per send time
    assert delivery[f"delivered at {doc['e2e']['stage']}"]["points"] == doc["throughput"]["delivery_steps"]
    assert shown.chart("pacing")["offered rate"]["points"] == 2


def validate(config: Path, *handlers: Handler) -> Outcome:
    """A run on the memory plugins; on a thread, since Playwright's sync API keeps a loop running here."""
    return run_sync(run_async(load_config(config, {}), None, handlers))


LOSSY = """
[source]
type = "memory"

[stages.kafka]
type = "memory"
delay = 0.005
shards = 2

[stages.api]
type = "memory"
delay = 0.03
drop = [3, 40, 41]
corrupt = [7, 8]
fields = { price = "p:decimal" }

[load]
count = 150
rate = 300
settle = 0
drain_timeout = "1s"

[sla]  # freshness judged at 2 s: the run waits that long for the canaries the api drops, not 30 s
thresholds = ["e2e.p99 < 2s", "lost == 0", "duplicates == 0", "corrupted == 0", "coverage == 100%"]
"""


def test_report_of_a_lossy_run_shows_what_went_wrong(browser: Open, tmp_path: Path) -> None:
    memory.register()
    config = tmp_path / "pipeline.toml"
    config.write_text(LOSSY)
    html, report = tmp_path / "lossy.html", tmp_path / "lossy.json"
    window = ShadedSpan(0.1, 0.2, "api drops canaries 40-41")
    outcome = validate(config, JsonReporter(report), HtmlReporter(html, windows=[window]))
    assert outcome.exit_code == ExitCode.VERDICT_FAILED
    doc = json.loads(report.read_text())
    shown = browser(html, "html-report-lossy")
    assert_renders_cleanly(shown, html)
    assert_banner_matches(shown, doc)
    assert shown.chart("timeline")["never arrived"]["points"] == 3
    assert shown.chart("timeline")["arrived"]["points"] == 147
    assert list(shown.chart("lost")) == ["stuck"]
    assert shown.chart("lost")["stuck"]["points"] == 2  # rows: stuck after source, stuck after kafka
    assert shown.page["bands"] == 1


def test_an_aborted_run_renders_its_error(browser: Open, tmp_path: Path) -> None:
    memory.register()
    config = tmp_path / "pipeline.toml"
    config.write_text(
        LOSSY.replace('type = "memory"\n\n[stages.kafka]', 'type = "memory"\nunreachable = true\n\n[stages.kafka]', 1)
    )
    html, report = tmp_path / "aborted.html", tmp_path / "aborted.json"
    with pytest.raises(EndpointError, match="nobody listens"):  # raised after every report is written
        validate(config, JsonReporter(report), HtmlReporter(html))
    doc = json.loads(report.read_text())
    shown = browser(html, "html-report-aborted")
    assert_renders_cleanly(shown, html)
    assert_banner_matches(shown, doc)
    assert shown.page["error"] == doc["error"] and "nobody listens" in doc["error"]
    assert shown.page["charts"] == []
