"""Background load through Trogdor, its pure parts: the rate split over agents, the ProduceBench specs
(each record's value a trade of its key's symbol, as Trogdor's own generators draw them), the coordinator's
task states, the load's life on a simulated coordinator (started, watched, stopped on every ending, its
achieved rate), a shortfall said, and the [load.background] settings."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline_check.backends.trogdor import load as load_module
from pipeline_check.backends.trogdor.client import TaskState, parse_task
from pipeline_check.backends.trogdor.load import TrogdorLoad
from pipeline_check.backends.trogdor.spec import PRODUCE_BENCH, percents, produce_bench, split_rate
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import load_config
from pipeline_check.core.errors import ConfigError, EndpointError
from pipeline_check.runs.background import trade_pools
from pipeline_check.verdict.summary import BackgroundLoad, InjectionStats

# -- the rate and the records ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "agents", "shares"),
    [
        (5000, ["a1", "a2"], {"a1": 2500, "a2": 2500}),
        (5010, ["a1", "a2"], {"a1": 2510, "a2": 2500}),
        (1004, ["a1", "a2", "a3"], {"a1": 340, "a2": 330, "a3": 330}),
        (15, ["a1", "a2"], {"a1": 10, "a2": 10}),  # Trogdor's 10/s steps: 15/s asked is 20/s
        (5, ["a1", "a2", "a3"], {"a1": 10}),  # below a step per agent: the first agent alone
    ],
)
def test_the_rate_is_split_in_trogdors_steps(rate: float, agents: list[str], shares: dict[str, int]) -> None:
    assert split_rate(rate, agents) == shares


def test_percents_are_whole_and_add_up() -> None:
    assert percents(3) == [34, 33, 33] and sum(percents(7)) == 100
    with pytest.raises(ValueError):
        percents(101)


class JavaRandom:
    """java.util.Random, as Trogdor's randomComponent generator draws from it."""

    def __init__(self, seed: int) -> None:
        self.seed = (seed ^ 0x5DEECE66D) & ((1 << 48) - 1)

    def _next(self, bits: int) -> int:
        self.seed = (self.seed * 0x5DEECE66D + 0xB) & ((1 << 48) - 1)
        value = self.seed >> (48 - bits)
        return value - (1 << bits) if value >= 1 << (bits - 1) and bits == 32 else value

    def next_int(self, bound: int) -> int:
        while True:
            bits = self._next(31)
            value = bits % bound
            if bits - value + (bound - 1) < (1 << 31):
                return value


def generate(generator: dict[str, Any], position: int) -> bytes:
    """Trogdor's constant and randomComponent generators, record ``position``."""
    if generator["type"] == "constant":
        value = base64.b64decode(generator["value"])
        assert len(value) == generator["size"]
        return value
    draw = JavaRandom(generator["seed"] + position).next_int(100)
    total = 0
    for component in generator["components"]:
        total += component["percent"]
        if total > draw:
            return generate(component["component"], position)
    raise AssertionError("percents short of 100")


def factory() -> TradeFactory:
    return TradeFactory(RunId(5), seed=7, count=1, symbols=("CANARYUSDT",), background_symbols=("BTCUSDT", "ETHUSDT"))


def bench(rate: float = 5000, agents: tuple[str, ...] = ("agent1", "agent2")) -> Any:
    return produce_bench(
        run="r1",
        rate=rate,
        agents=agents,
        bootstrap="h1:9092,h2:9092",
        topic="market.trades.raw",
        partitions=3,
        replication=3,
        trades=trade_pools(factory(), ("BTCUSDT", "ETHUSDT"), 1_750_000_000_000),
        duration_s=120,
        producer={"linger.ms": "20", "compression.type": "lz4"},
    )


def test_each_records_value_is_a_trade_of_its_keys_symbol_from_the_runs_generator() -> None:
    plan = bench()
    symbols: dict[str, int] = {}
    seen_trades: set[bytes] = set()
    for task in plan.tasks:
        spec = task.spec
        for position in range(2000):
            key = generate(spec["keyGenerator"], position).decode()
            value = json.loads(generate(spec["valueGenerator"], position))
            assert value["s"] == key and value["e"] == "trade"
            assert value["t"] < RunId(5).tag(0)  # background trade ids, far below the canaries'
            symbols[key] = symbols.get(key, 0) + 1
            seen_trades.add(generate(spec["valueGenerator"], position))
    assert set(symbols) == {"BTCUSDT", "ETHUSDT"}
    assert 0.45 < symbols["BTCUSDT"] / sum(symbols.values()) < 0.55  # an even share each
    assert len(seen_trades) == 100  # the whole pool: 50 trades per symbol


def test_a_task_per_agent_with_its_share_bounded_in_time() -> None:
    plan = bench(rate=5005)
    assert plan.target == 5000 and plan.rounded and plan.asked == 5005
    [one, two] = plan.tasks
    assert (one.agent, one.rate, two.agent, two.rate) == ("agent1", 2500, "agent2", 2500)
    assert one.task_id == "pipeline-check-r1-agent1"
    spec = one.spec
    assert spec["class"] == PRODUCE_BENCH and spec["producerNode"] == "agent1"
    assert spec["targetMessagesPerSec"] == 2500 and spec["durationMs"] == 120_000
    assert spec["maxMessages"] >= 2500 * 120  # the duration ends it, not the count
    assert spec["bootstrapServers"] == "h1:9092,h2:9092"
    assert spec["activeTopics"] == {"market.trades.raw": {"numPartitions": 3, "replicationFactor": 3}}
    assert spec["useConfiguredPartitioner"] is True
    assert spec["producerConf"] == {
        "acks": "all",
        "linger.ms": "20",
        "compression.type": "lz4",
        "client.id": "pipeline-check-r1-agent1",
    }
    assert one.spec["keyGenerator"]["seed"] != two.spec["keyGenerator"]["seed"]  # agents draw differently


# -- the coordinator's answers ------------------------------------------------------------------------


def test_task_states_parse_as_the_worker_reports_them() -> None:
    preparing = parse_task({"state": "RUNNING", "startedMs": 5, "status": "Creating 1 topic(s)"})
    assert not preparing.sending and preparing.sent is None
    sending = parse_task({"state": "RUNNING", "startedMs": 5, "status": "Created 1 topic(s)"})
    assert sending.sending and sending.sent is None
    figures = parse_task({"state": "RUNNING", "status": {"totalSent": 1200, "averageLatencyMs": 3.5}})
    assert figures.sending and figures.sent == 1200
    done = parse_task({"state": "DONE", "startedMs": 5, "doneMs": 9, "cancelled": True, "status": {"totalSent": 7}})
    assert (done.cancelled, done.error, done.done_ms, done.sent) == (True, "", 9, 7)
    assert parse_task({}) == TaskState("UNKNOWN", None, None, None, "", False)  # empty maps are left out


class FakeCoordinator:
    """Tasks run at their spec's rate on a wall clock the test moves; ``fail`` names agents whose task
    ends with an error at once; ``lag`` is how many reads a task prepares before sending."""

    url = "http://coordinator"

    def __init__(self, *, fail: tuple[str, ...] = (), lag: int = 1, rate_share: float = 1.0, done_lag: int = 0) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.fail = fail
        self.lag = lag
        self.done_lag = done_lag  # reads a stopped task still shows as running (the status relayed each second)
        self.rate_share = rate_share  # the share of its target an agent achieves
        self.now_ms = 1_000_000
        self.calls: list[str] = []
        self.closed = False

    async def create(self, task_id: str, spec: dict[str, Any]) -> None:
        self.calls.append(f"create {task_id}")
        failed = spec["producerNode"] in self.fail
        self.tasks[task_id] = {
            "spec": spec,
            "started": self.now_ms,
            "reads": 0,
            "failed": failed,
            "done": None,
            "reads_stopped": 0,
        }

    async def stop(self, task_id: str) -> None:
        self.calls.append(f"stop {task_id}")
        task = self.tasks[task_id]
        task["done"] = task["done"] or self.now_ms

    async def task(self, task_id: str) -> TaskState:
        task = self.tasks[task_id]
        task["reads"] += 1
        if task["failed"]:
            at = task["started"]
            return parse_task({"state": "DONE", "startedMs": at, "doneMs": at, "error": "boom"})
        if task["done"] is None:
            if task["reads"] <= self.lag:
                self.now_ms += 500  # preparing (checking the topic, making its producer) takes a while
                return parse_task({"state": "RUNNING", "startedMs": task["started"], "status": "Creating 1 topic(s)"})
            task.setdefault("sending", self.now_ms)
            return parse_task({"state": "RUNNING", "startedMs": task["started"], "status": "Created 1 topic(s)"})
        if task["reads_stopped"] < self.done_lag:
            task["reads_stopped"] += 1
            self.now_ms += 1000
            return parse_task({"state": "RUNNING", "startedMs": task["started"], "status": {"totalSent": 1}})
        seconds = (task["done"] - task.get("sending", task["done"])) / 1000
        sent = int(task["spec"]["targetMessagesPerSec"] * self.rate_share * seconds)
        return parse_task(
            {"state": "DONE", "startedMs": task["started"], "doneMs": task["done"], "cancelled": True,
             "status": {"totalSent": sent}}
        )  # fmt: skip

    async def close(self) -> None:
        self.closed = True

    def clock(self) -> float:
        return self.now_ms / 1000


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "POLL", 0.001)


@pytest.mark.parametrize("done_lag", [0, 2], ids=["done-seen-at-once", "done-seen-2s-late"])
def test_the_load_sends_before_the_canaries_and_its_rate_comes_from_the_final_counts(done_lag: int) -> None:
    coordinator = FakeCoordinator(lag=3, done_lag=done_lag)
    notes: list[str] = []
    load = TrogdorLoad(coordinator, bench(), notes.append, clock=coordinator.clock)  # type: ignore[arg-type]

    async def run() -> BackgroundLoad:
        await load.start()
        assert all(t["reads"] > 3 for t in coordinator.tasks.values())  # waited until each was sending
        coordinator.now_ms += 20_000  # the run
        return await load.stop()

    figures = asyncio.run(run())
    # the window runs from when the tasks were seen sending, not from their (slow) start, to when they were
    # told to stop, not to when the coordinator relayed that they were done
    assert figures.engine == "trogdor" and figures.sent == 100_000 and figures.seconds == 20.0
    assert figures.achieved_rate == 5000 and figures.short is None
    assert [a.sent for a in figures.agents] == [50_000, 50_000]
    assert coordinator.calls[-2:] == ["stop pipeline-check-r1-agent1", "stop pipeline-check-r1-agent2"]
    assert coordinator.closed and "background: 5,000/s on Trogdor (agent1 2,500/s, agent2 2,500/s)" in notes


def test_a_load_that_falls_short_says_the_pipeline_was_not_tested_at_the_rate_asked() -> None:
    coordinator = FakeCoordinator(rate_share=0.6)
    load = TrogdorLoad(coordinator, bench(), lambda _: None, clock=coordinator.clock)  # type: ignore[arg-type]

    async def run() -> BackgroundLoad:
        await load.start()
        coordinator.now_ms += 20_000
        return await load.stop()

    figures = asyncio.run(run())
    assert figures.achieved_rate == 3000
    assert figures.short == (
        "trogdor background load reached 3,000/s of 5,000/s asked (60%): the pipeline was not tested at the rate asked"
    )
    stats = InjectionStats(100, 0, 10.0, 10.0, 0.0, 0, background_load=figures)
    assert stats.limited == figures.short  # the throughput check says it was the validator's limit


def test_a_task_that_fails_to_start_stops_the_run_and_every_task_created_is_stopped() -> None:
    coordinator = FakeCoordinator(fail=("agent2",))
    load = TrogdorLoad(coordinator, bench(), lambda _: None)  # type: ignore[arg-type]

    async def run() -> None:
        try:
            await load.start()
        finally:
            await load.stop()  # what the run does on every ending

    with pytest.raises(EndpointError, match=r"load\.background\.agents.*boom"):
        asyncio.run(run())
    assert {c for c in coordinator.calls if c.startswith("stop")} == {
        "stop pipeline-check-r1-agent1",
        "stop pipeline-check-r1-agent2",
    }


def test_a_task_that_ends_during_the_run_is_told_once() -> None:
    coordinator = FakeCoordinator()
    notes: list[str] = []
    load = TrogdorLoad(coordinator, bench(), notes.append)  # type: ignore[arg-type]
    monkey = pytest.MonkeyPatch()
    monkey.setattr(load_module, "WATCH_EVERY", 0.001)

    async def run() -> None:
        await load.start()
        coordinator.tasks["pipeline-check-r1-agent2"]["failed"] = True  # its agent died
        stop = asyncio.Event()
        watching = asyncio.create_task(load.watch(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await watching

    try:
        asyncio.run(run())
    finally:
        monkey.undo()
    told = [n for n in notes if "ended during the run" in n]
    assert told == ["background: Trogdor task pipeline-check-r1-agent2 ended during the run (boom)"]


def test_unknown_counts_are_not_a_rate() -> None:
    load = BackgroundLoad("trogdor", 5000, None, None, 0.0)
    assert load.short is not None and "unknown" in load.short
    assert BackgroundLoad("local", 0, None, 0, 0.0).short is None
    assert BackgroundLoad("local", 200, 199.0, 3980, 20.0).short is None


# -- [load.background] -------------------------------------------------------------------------------

CONFIG = """
[source]
type = "websocket"
port = 1
[stages.kafka]
bootstrap = "k:9092"
topic = "raw"
[load]
background_rate = 100
[load.background]
{background}
"""


@pytest.mark.parametrize(
    ("background", "problem"),
    [
        ('engine = "trogdor"\ncoordinator = "http://c:1"', "needs `coordinator` \\(its URL\\) and `agents`"),
        ('coordinator = "http://c:1"', 'belong to engine "trogdor"'),
        ('engine = "wind"', "engine"),
    ],
)
def test_bad_background_settings_are_refused(tmp_path: Path, background: str, problem: str) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(background=background))
    with pytest.raises(ConfigError, match=problem):
        load_config(path, {})


def test_trogdor_settings_default_to_the_kafka_stage(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(background='engine = "trogdor"\ncoordinator = "http://c:1"\nagents = "a1, a2"'))
    config = load_config(path, {})
    assert config.load.background.agents == ("a1", "a2")  # one string, as an exported variable gives them
    assert config.background_target() == ("k:9092", "raw")
    no_kafka = CONFIG.replace(
        '[stages.kafka]\nbootstrap = "k:9092"\ntopic = "raw"', '[stages.api]\nbase_url = "http://a"'
    )
    path.write_text(no_kafka.format(background='engine = "trogdor"\ncoordinator = "http://c:1"\nagents = ["a1"]'))
    with pytest.raises(ConfigError, match=r"load\.background\.bootstrap"):
        load_config(path, {})
