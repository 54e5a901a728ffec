"""The engine end to end on the in-memory plugins: verdicts and statuses, settle, aborted runs, reports."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline_check.backends.capabilities import PROBES
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.core.errors import EndpointError, ExitCode
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.reporting.junit import JUnitReporter
from pipeline_check.runs.driver import Outcome, run
from pipeline_check.verdict.events import Event, RunAborted, RunFinished
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import KEPT_PACE
from pipeline_check.verdict.thresholds import DEFAULT_THRESHOLDS
from tests.support import memory

BASE = """
[source]
type = "memory"
{source}

[stages.kafka]
type = "memory"
delay = 0.005
shards = 3
{kafka}

[stages.api]
type = "memory"
delay = 0.02
fields = {{ price = "p:decimal" }}
{api}

[load]
count = 100
rate = 250
settle = 0
drain_timeout = "1s"

[sla]
# every default but the delivered rate, which needs a run several delivery gaps long: the clean-run test
# judges it over a longer run, here it would only measure how busy the machine is
thresholds = [
    "e2e.p99 < 30s", "lost == 0", "duplicates == 0", "corrupted == 0",
    "retracted == 0", "incomplete == 0", "coverage == 100%",
]
"""


class PacedProbe(memory.MemoryProbe):
    """A memory probe that notes, at each look, how many canaries wait at its stage and whether the run settles."""

    seen: ClassVar[dict[str, list[tuple[int, bool]]]] = {}

    def _look(self) -> None:
        pace = self.ctx.pace
        PacedProbe.seen.setdefault(self.ctx.stage, []).append((pace.waiting(self.ctx.stage), pace.settling))
        super()._look()


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()
    PROBES.add("paced", f"{__name__}:PacedProbe")


def config(tmp_path: Path, source: str = "", kafka: str = "", api: str = "", extra: str = "") -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(BASE.format(source=source, kafka=kafka, api=api) + extra)
    return load_config(path, {})


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = 0

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1


def statuses(outcome: Outcome) -> dict[str, Status]:
    return {r.threshold: r.status for r in outcome.finished.results}


def test_a_clean_run_passes_every_default_check(tmp_path: Path) -> None:
    events = Recorder()
    cfg = config(tmp_path)
    cfg = cfg.model_copy(update={"sla": cfg.sla.model_copy(update={"thresholds": DEFAULT_THRESHOLDS})})
    outcome = run(cfg.with_overrides(None, count=300, rate=100), handlers=[events])
    assert outcome.exit_code == ExitCode.OK, outcome.finished.results
    s = statuses(outcome)
    assert set(s.values()) == {Status.PASSED}, s
    assert "out_of_order == 0" not in s
    summary = outcome.finished.summary
    assert (summary.injected, summary.delivered, summary.final) == (300, 300, "api")
    assert [c.seen for c in summary.stage["kafka"].shards] == [100, 100, 100]
    assert s["throughput >= 90%"] == Status.PASSED
    assert events.closed == 1 and isinstance(events.events[-1], RunFinished)
    assert any(getattr(e, "message", "") == "memory pipe 'default' open" for e in events.events)
    assert outcome.finished.notes == ("memory pipe 'default' open",)


@pytest.mark.parametrize(
    ("api", "kafka", "failed", "detail"),
    [
        ("drop = [50]", "", "lost == 0", "1 of 100 not delivered (1 stuck after kafka)"),
        ("duplicate = [7]", "", "duplicates == 0", "api: 1"),
        ("corrupt = [9]", "", "corrupted == 0", "1 canaries with differing fields"),
        ("retract = [11]", "", "retracted == 0", "api: 1"),
        ("", "empty_shard = 2", "coverage == 100%", "no canary in kafka partition 2"),
        ("", "drop = [5]", "incomplete == 0", "kafka: 99 of 100 seen at kafka"),
    ],
)
def test_each_fault_fails_its_check_and_only_that(
    tmp_path: Path, api: str, kafka: str, failed: str, detail: str
) -> None:
    outcome = run(config(tmp_path, api=api, kafka=kafka))
    assert outcome.exit_code == ExitCode.VERDICT_FAILED
    s = statuses(outcome)
    assert {t for t, st in s.items() if st != Status.PASSED} == {failed}, s
    assert detail in outcome.result(failed).detail
    with pytest.raises(AssertionError, match=rf"{failed}: failed, observed"):
        outcome.check()


def test_nothing_compared_is_inconclusive_not_passed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    api = cfg.stage("api")
    assert api is not None
    bare = api.model_copy(update={"settings": api.settings.model_copy(update={"fields": {}})})
    cfg = cfg.model_copy(update={"stages": (cfg.stages[0], bare)})
    outcome = run(cfg)
    check = outcome.result("corrupted == 0")
    assert check.status == Status.INCONCLUSIVE and "nothing was compared" in check.detail
    assert outcome.finished.verdict == Status.INCONCLUSIVE and outcome.exit_code == ExitCode.VERDICT_FAILED
    allowed = run(cfg, allow_inconclusive=True)
    assert allowed.finished.verdict == Status.INCONCLUSIVE and allowed.exit_code == ExitCode.OK
    allowed.check()  # allowed: the gate is open, the report still says inconclusive


def test_ordering_and_rates(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rules = ("out_of_order == 0", "loss_rate < 10%", "loss_rate < 0.1%")
    outcome = run(cfg.model_copy(update={"sla": cfg.sla.model_copy(update={"thresholds": rules})}))
    s = statuses(outcome)
    assert s["out_of_order == 0"] == Status.NOT_APPLICABLE  # the memory stages record no order
    assert s["loss_rate < 10%"] == Status.PASSED  # 0 of 100: below 2.95 % with 95 % confidence
    assert s["loss_rate < 0.1%"] == Status.INCONCLUSIVE  # 100 canaries cannot show 0.1 %
    assert outcome.result("loss_rate < 10%").rate_bound == pytest.approx(2.95, abs=0.01)


def test_settle_waits_for_late_copies(tmp_path: Path) -> None:
    cfg = config(tmp_path).with_overrides(None, settle="300ms")
    outcome = run(cfg)
    assert outcome.finished.summary.settle_s == pytest.approx(0.3)
    assert outcome.finished.duration >= 0.3


def test_probes_learn_what_waits_at_their_stage_and_when_the_run_settles(tmp_path: Path) -> None:
    PacedProbe.seen.clear()
    path = tmp_path / "pipeline.toml"
    text = BASE.format(source="", kafka="", api="").replace('type = "memory"\ndelay', 'type = "paced"\ndelay')
    path.write_text(text)
    cfg = load_config(path, {}).with_overrides(None, settle="300ms")
    outcome = run(cfg)
    assert outcome.exit_code == ExitCode.OK, outcome.finished.results
    for stage in ("kafka", "api"):
        looks = PacedProbe.seen[stage]
        assert max(w for w, _ in looks) > 0, stage  # canaries waited at some look
        settling = [w for w, settles in looks if settles]
        assert settling and set(settling) == {0}, stage  # the settle window: everything shown, probes look on
    # every canary was sent before the kafka stage could show it, and the api's wait for kafka's
    assert max(w for w, _ in PacedProbe.seen["kafka"]) <= 100 and max(w for w, _ in PacedProbe.seen["api"]) <= 100


def test_the_run_says_what_each_probe_asked_of_the_system(tmp_path: Path) -> None:
    outcome = run(config(tmp_path))
    load = outcome.finished.probe_load
    assert set(load) == {"kafka", "api"}
    for figures in load.values():
        looks = figures.calls["requests"]
        assert looks > 10 and figures.bytes["requests"] == looks * memory.LOOK_BYTES
        assert figures.seconds == outcome.finished.duration


def test_an_unreachable_source_aborts_with_reports_saying_why(tmp_path: Path) -> None:
    json_path, junit_path = tmp_path / "r" / "v.json", tmp_path / "r" / "junit.xml"
    events = Recorder()
    handlers = [events, JsonReporter(json_path), JUnitReporter(junit_path)]
    with pytest.raises(EndpointError, match="nobody listens"):
        run(config(tmp_path, source="unreachable = true"), handlers=handlers)
    assert isinstance(events.events[-1], RunAborted) and events.closed == 1
    doc = json.loads(json_path.read_text())
    assert (doc["verdict"], doc["exit_code"]) == ("aborted", 2) and "nobody listens" in doc["error"]
    case = ET.parse(junit_path).getroot().find("testsuite/testcase/error")
    assert case is not None and "nobody listens" in case.get("message", "")


def test_a_bug_aborts_as_an_internal_error(tmp_path: Path) -> None:
    events = Recorder()
    with pytest.raises(RuntimeError, match="broke"):
        run(config(tmp_path, source="crash_after = 10"), handlers=[events])
    end = events.events[-1]
    assert isinstance(end, RunAborted) and end.exit_code == ExitCode.INTERNAL_ERROR
    assert end.reason == "internal error: RuntimeError: the memory injector broke"


def test_pacing_reports_what_it_achieved(tmp_path: Path) -> None:
    outcome = run(config(tmp_path).with_overrides(None, count=50, rate=500, background_rate=500))
    injection = outcome.finished.summary.injection
    assert injection.sent == 50 and injection.offered_rate == 500 and injection.pauses == 0
    # what it achieved is what the book's injection times show, never above the schedule; on a busy machine it
    # may fall behind, and then (only then) the run says the validator set the pace
    sent_at = outcome.book.injected_at[: injection.sent]
    assert injection.achieved_rate == pytest.approx(49 / (sent_at[-1] - sent_at[0]), rel=0.05)
    assert injection.achieved_rate <= 510
    assert (injection.limited is None) == (injection.achieved_rate >= KEPT_PACE * 500), injection.limited
    assert 35 <= injection.background <= 65  # as many background trades as canaries, over the same time


def test_a_run_without_an_iceberg_stage_never_imports_pyiceberg(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(BASE.format(source="", kafka="", api="").replace("shards = 3", "shards = 0"))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.support import memory\n"
        "from pipeline_check.config import load_config\n"
        "from pipeline_check.runs.driver import run\n"
        "memory.register()\n"
        f"run(load_config(Path({str(path)!r}), {{}}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyiceberg', 'aiokafka', 'pyarrow')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
