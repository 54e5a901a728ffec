"""The pytest plugin itself, through pytester: options, markers, fixtures, JUnit properties, --pc-gate.

The ``validator`` fixture is exercised against a fake engine (a pure-logic stand-in for the run) so
these tests stay fast; the real engine is covered by the e2e suites.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

FAKE_RUN = """
import pytest
from pipeline_check import engine
from tests_support import fake_outcome

@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    async def run_async(config, scenario=None, handlers=()):
        return fake_outcome(config, scenario)
    monkeypatch.setattr(engine, "run_async", run_async)

@pytest.fixture(scope="session")
def pipeline_config():
    from pathlib import Path
    from pipeline_check.config import load_config
    return load_config(Path(r"{config}"), {{}})
"""

SUPPORT = '''
"""A stand-in outcome built from a trace book with synthetic times (no processes)."""
from pipeline_check.clock import Clock
from pipeline_check.engine import Outcome
from pipeline_check.events import InjectionStats, RunFinished
from pipeline_check.messages import TradeFactory
from pipeline_check.sla import Status, evaluate
from pipeline_check.tags import RunId
from pipeline_check.trace import TraceBook

def fake_outcome(config, scenario, delay=0.5):
    load = config.load_for(scenario)
    run = RunId.new()
    factory = TradeFactory(run, seed=1, count=load.count, symbol="CANARYUSDT")
    stages = config.stages.enabled()
    book = TraceBook(run, factory, stages, Clock())
    for seq in range(load.count):
        at = seq / load.rate
        book.inject(seq, at)
        for i, stage in enumerate(stages):
            book.seen(stage, seq, at + delay * (i + 1))
    summary = book.summary(load.rate)
    m = book.measurements(summary, config.sla.min_samples)
    results = tuple(evaluate(t, m) for t in config.thresholds_for(scenario))
    finished = RunFinished(
        verdict=max((r.status for r in results), default=Status.PASSED),
        results=results,
        summary=summary,
        injection=InjectionStats(load.count, 0, load.rate, load.rate, 0.0, 0),
        resolution={s: 0.1 for s in stages},
        duration=1.0,
    )
    return Outcome(finished, book)
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    config = pytester.path / "pipeline.toml"
    config.write_text(
        """
[source]
type = "kafka"
[stages.kafka]
bootstrap = "127.0.0.1:1"
topic = "raw"
[stages.api]
base_url = "http://127.0.0.1:1"
[load]
count = 200
rate = 100
"""
    )
    pytester.makepyfile(tests_support=SUPPORT)
    pytester.makeconftest(FAKE_RUN.format(config=config))
    return pytester


def test_options_and_markers_are_registered(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    for option in ("--pc-config", "--pc-stack", "--pc-gate", "--pc-service-env"):
        assert option in help_text
    markers = pytester.runpytest("--markers").stdout.str()
    for marker in ("e2e:", "slow:", "freshness:", "resilience:", "stack:"):
        assert f"@pytest.mark.{marker}" in markers


def test_strict_markers_reject_an_unknown_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.e2e\n@pytest.mark.typo\ndef test_x(): pass\n")
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(errors=1)
    assert "'typo' not found in `markers`" in result.stdout.str()


def test_validator_passes_and_records_sla_figures_in_junit(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_fresh(validator):
            outcome = validator(thresholds=("e2e.p99 < 5s",))
            outcome.check()
        """
    )
    result = suite.runpytest_subprocess("--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    case = ET.parse(suite.path / "out.xml").getroot().find(".//testcase")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["delivered"] == "200" and props["lost"] == "0"
    assert props["check[e2e.p99 < 5s]"].startswith("PASSED observed=1.000s")
    assert "e2e.p99_s" in props and "stage.api.p99_s" in props


def test_a_failed_check_reads_like_an_assertion(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_fresh(validator):
            validator(thresholds=("e2e.p99 < 100ms",)).check()
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "VerdictFailed: 1 of 6 SLA checks failed" in out
    assert "e2e.p99 < 100ms: observed 1.000s" in out


def test_inject_probes_only_up_to_the_stage(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_to_kafka(inject):
            outcome = inject(150, "kafka")
            assert outcome.book.stages == ("kafka",)
            assert [r.threshold for r in outcome.finished.results] == ["lost == 0"]
            outcome.check()
        """
    )
    suite.runpytest_subprocess().assert_outcomes(passed=1)


def test_too_few_samples_fail(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_few(validator):
            validator(count=20).check()
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    assert "too few samples for p99 of e2e latency: 20 < 100 needed" in result.stdout.str()


def test_pc_gate_turns_skips_into_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        def test_skipped():
            pytest.skip("no engine")
        """
    )
    pytester.runpytest().assert_outcomes(skipped=1)
    gated = pytester.runpytest("--pc-gate")
    gated.assert_outcomes(failed=1)
    assert "--pc-gate: skipped tests fail the gate" in gated.stdout.str()


def test_external_stack_cannot_be_driven(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_needs_local(pipeline_stack):
            pipeline_stack.require_local()
        """
    )
    result = pytester.runpytest("--pc-stack", "external", "-rs")
    result.assert_outcomes(skipped=1)
    assert "needs --pc-stack local" in result.stdout.str()
    pytester.runpytest("--pc-stack", "external", "--pc-gate").assert_outcomes(failed=1)


def test_bad_service_env_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(pipeline_stack): pass\n")
    result = pytester.runpytest_subprocess("--pc-service-env", "consumer-no-equals")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected SERVICE:NAME=VALUE" in result.stderr.str()
