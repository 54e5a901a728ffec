"""Shared fixtures of the e2e suites (the stack itself comes from the pipeline-check plugin)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.pytest_plugin import PipelineStack, free_ports
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.spec import load_stack, profile_file
from pipeline_check.verdict.events import Event, Injected
from tests.e2e.lakehouse import PROFILE

# autouse: every JSON report a test renders is checked against the bundled schema
from tests.support.report_schema import reports_follow_the_schema  # noqa: F401

CONFIG = Path(__file__).parents[2] / "compose" / "pipeline.toml"
CLUSTER_PROFILE = profile_file("cluster", CONFIG.parent / "stack.toml")
ConfigVariant = Callable[..., PipelineConfig]


def pytest_configure(config: pytest.Config) -> None:
    """The e2e suites validate the reference pipeline: compose/pipeline.toml, unless --pc-config or
    $PIPELINE_CHECK_CONFIG names another (the plugin's own lookup knows nothing of compose/)."""
    if not config.getoption("--pc-config"):
        config.option.pc_config = str(CONFIG)


@pytest.fixture
def local_stack(pipeline_stack: PipelineStack) -> Iterator[LocalStack]:
    """The session's local stack, for tests that stop, kill or reconfigure services; afterwards it is
    back to its declared state (every service up, healthy, default settings) for the next test."""
    stack = pipeline_stack.require_local()
    yield stack
    stack.reset()


@pytest.fixture
def config_variant(pipeline_stack: PipelineStack, tmp_path: Path) -> ConfigVariant:
    """``config_variant((old, new), ..., source=None, append="")``: compose/pipeline.toml with text replaced
    (each ``old`` must be there), the ``[source]`` section's body replaced, sections appended, loaded
    against the session's stack."""

    def load(*replacements: tuple[str, str], source: str | None = None, append: str = "") -> PipelineConfig:
        text = CONFIG.read_text()
        if source is not None:
            start, end = text.index("[source]\n"), text.index("\n[messages]")
            text = f"{text[:start]}[source]\n{source}\n{text[end:]}"
        for old, new in replacements:
            assert old in text, f"{old!r} is not in {CONFIG}"
            text = text.replace(old, new)
        path = tmp_path / "pipeline.toml"
        path.write_text(text + append)
        return load_config(path, pipeline_stack.env())

    return load


class AfterInjected:
    """A handler that runs ``action`` on a thread once ``sent`` canaries are injected (the engine's
    loop must keep going while a service stops)."""

    def __init__(self, sent: int, action: Callable[[], object]) -> None:
        self.sent = sent
        self.action = action
        self.thread: threading.Thread | None = None

    def handle(self, event: Event) -> None:
        if isinstance(event, Injected) and event.sent >= self.sent and self.thread is None:
            self.thread = threading.Thread(target=self.action, daemon=True)
            self.thread.start()

    def close(self) -> None:
        assert self.thread is not None, f"the run ended before {self.sent} canaries were injected"
        self.thread.join(timeout=60)


@contextmanager
def profile_stack(profile: Path, run_dir: Path) -> Iterator[LocalStack]:
    """The stack of ``profile`` up in ``run_dir`` on free ports; stopped after."""
    declared = load_stack(profile)
    local = LocalStack(load_stack(profile, run_dir=run_dir, ports=free_ports(list(declared.ports))))
    try:
        local.up()
        yield local
    finally:
        local.down()


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The lakehouse profile's stack for the module (Kafka, S3, REST catalog, registry, consumer, ingestor,
    API) on free ports, stopped after it."""
    with profile_stack(PROFILE, tmp_path_factory.mktemp("lakehouse")) as local:
        yield local


@pytest.fixture
def lakehouse_reset(lakehouse: LocalStack) -> Iterator[LocalStack]:
    """The module's lakehouse stack for a test that restarts services; back to its declared state after."""
    yield lakehouse
    lakehouse.reset()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The cluster profile's stack (three brokers, Toxiproxy, consumer, ingestor, API, Trogdor) on free ports,
    for the cluster suites (``make test-e2e-cluster``), stopped after them."""
    with profile_stack(CLUSTER_PROFILE, tmp_path_factory.mktemp("cluster")) as local:
        yield local


@pytest.fixture
def cluster_up(cluster: LocalStack) -> Iterator[LocalStack]:
    """The session's cluster, every service up; back to its declared state (default settings) after."""
    cluster.up()
    yield cluster
    cluster.reset()
