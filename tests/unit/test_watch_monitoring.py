"""compose/monitoring: the alert rules pass promtool, and every metric the rules and the Grafana
dashboard query is one the watch exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline_check.runs.watch.metrics import WatchMetrics
from tests.support import promtool

MONITORING = Path(__file__).resolve().parents[2] / "compose" / "monitoring"
METRIC = re.compile(r"\b(?:pipeline_check|process)_[a-z_]+\b")


def exposed() -> set[str]:
    metrics = WatchMetrics(("kafka", "api"), "api", ["lost == 0"])
    text = generate_latest(metrics.registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())  # type: ignore[no-any-return]


@promtool.needed
def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool.run("check", "rules", str(MONITORING / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_rules_and_dashboard_query_only_metrics_the_watch_exposes() -> None:
    names = exposed()
    expressions = rule_expressions()
    expressions += [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert len(used) >= 10
    assert used <= names, f"not exposed: {sorted(used - names)}"
    for wanted in ("pipeline_check_sla_ok", "pipeline_check_canaries_lost_total", "pipeline_check_availability"):
        assert wanted in used


def test_the_dashboard_is_importable() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    cells = [
        (x, y)
        for g in (p["gridPos"] for p in panels)
        for x in range(g["x"], g["x"] + g["w"])
        for y in range(g["y"], g["y"] + g["h"])
    ]
    assert len(cells) == len(set(cells)), "panels overlap"
    assert max(x for x, _ in cells) < 24, "wider than Grafana's 24 columns"
