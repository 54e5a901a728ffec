"""The pytest plugin itself, through pytester: options, markers, fixtures, JUnit properties, --pc-gate.

The ``validator`` fixture runs the real engine on the in-memory test plugins (``tests/support/memory.py``)
so these tests stay fast and need no processes; the e2e suites run it against the real stack.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).parents[2]

CONFTEST = """
import pytest
from tests.support import memory

memory.register()


@pytest.fixture(scope="session")
def pipeline_config():
    from pathlib import Path
    from pipeline_check.config import load_config
    return load_config(Path(r"{config}"), {{}})
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the subprocess imports tests.support.memory
    config = pytester.path / "pipeline.toml"
    config.write_text(
        """
[source]
type = "memory"
[stages.kafka]
type = "memory"
delay = 0.01
[stages.api]
type = "memory"
delay = 0.05
fields = { price = "p:decimal" }
[load]
count = 200
rate = 400
settle = 0
[sla]
thresholds = ["e2e.p99 < 30s", "lost == 0", "duplicates == 0", "corrupted == 0", "retracted == 0", "incomplete == 0"]
"""
    )
    pytester.makeconftest(CONFTEST.format(config=config))
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
    assert props["check[e2e.p99 < 5s]"].startswith("passed observed=")
    assert "e2e.p99_s" in props and "stage.api.p99_s" in props
    assert float(props["check[lost == 0].rate_bound_pct"]) == pytest.approx(1.487, abs=0.01)


def test_a_failed_check_reads_like_an_assertion(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_fresh(validator):
            validator(thresholds=("e2e.p99 < 10ms",)).check()
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "VerdictFailed: 1 of 7 SLA checks did not pass" in out
    assert "e2e.p99 < 10ms: failed, observed" in out


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


def test_too_few_samples_are_inconclusive_and_fail_the_check(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        def test_few(validator):
            validator(count=20).check()
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "e2e.p99 < 30s: inconclusive, observed n/a (too few samples for p99 of e2e latency: 20 < 100" in out


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
