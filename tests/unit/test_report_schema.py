"""The JSON report's bundled schema: valid, shipped as package data, printed by the CLI, and strict enough to
fail a report that drifts from it. (Every report the tests render is checked against it: the
``reports_follow_the_schema`` fixture.)"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.cli import main
from pipeline_check.core.errors import ExitCode
from pipeline_check.reporting.json import SCHEMA_FILE, build_document, report_schema
from pipeline_check.verdict.events import RunAborted
from tests.support.report_schema import validate_report

ROOT = Path(__file__).parents[2]


def test_the_schema_ships_as_package_data_and_the_cli_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(report_schema())["properties"]["schema_version"] == {"const": 2}
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"reporting/{SCHEMA_FILE}" in data["pipeline_check"]
    assert main(["report-schema"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out) == json.loads(report_schema())


def test_reports_of_finished_aborted_and_faulted_runs_follow_it(make_run: Callable[..., Any]) -> None:
    run = make_run(count=50, lost={3: "kafka", 7: "source"}, corrupt=[5], duplicates={"api": [9]})
    validate_report(build_document(run.started, run.finished, list(run.results)))
    aborted = RunAborted("stages.api.base_url='http://x' (str): does not answer", ExitCode.USAGE_ERROR)
    validate_report(build_document(run.started, aborted, list(run.results[:2])))
    validate_report(build_document(None, aborted, []))


def test_a_report_that_drifts_from_the_schema_fails(make_run: Callable[..., Any]) -> None:
    run = make_run(count=20)
    doc = build_document(run.started, run.finished, list(run.results))
    for broken in (
        {k: v for k, v in doc.items() if k != "verdict"},
        {**doc, "surprise": 1},
        {**doc, "lost": {**doc["lost"], "count": -1}},
        {**doc, "checks": [{**doc["checks"][0], "status": "pass"}]},
        {**doc, "e2e": {**doc["e2e"], "latency": {"p99": "infinite"}}},
        {**doc, "verdict": "aborted"},  # an aborted report carries no figures and names its error
    ):
        with pytest.raises(AssertionError, match=r"breaks report\.schema\.json"):
            validate_report(broken)
    summary = dataclasses.replace(run.summary, stages=[])
    validate_report(build_document(run.started, dataclasses.replace(run.finished, summary=summary), []))
