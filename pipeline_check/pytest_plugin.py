"""pytest plugin: options, markers and fixtures to validate a pipeline from a test suite.

Import-light on purpose (registered through the ``pytest11`` entry point, so it loads in every pytest
run of an environment that has pipeline-check): the engine, stack drivers and reporters are imported
inside the fixtures that need them.

Options: ``--pc-config``, ``--pc-stack local|external|containers``, ``--pc-gate``.
Fixtures: ``pipeline_stack`` (session), ``pipeline_config`` (session), ``validator``, ``inject``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pipeline_check.config import PipelineConfig
    from pipeline_check.engine import Outcome
    from pipeline_check.events import Handler
    from pipeline_check.stack.local import LocalStack

MARKERS = {
    "e2e": "runs against a real pipeline (processes, brokers, tables)",
    "slow": "takes more than a few seconds",
    "freshness": "judges data freshness SLAs",
    "resilience": "stops, kills or restarts services during a run",
    "stack": "checks the stack itself: start order, health, restarts",
    "cluster": "runs on the cluster profile (three Kafka brokers, Trogdor): make test-e2e-cluster",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pipeline-check", "pipeline-check: end-to-end pipeline validation")
    group.addoption(
        "--pc-config",
        default=os.environ.get("PIPELINE_CHECK_CONFIG"),
        help="pipeline.toml to validate against [default: compose/pipeline.toml]",
    )
    group.addoption(
        "--pc-stack",
        choices=("local", "external", "containers"),
        default="local",
        help="local: start the stack.toml processes (free ports, torn down after); external: use what the "
        "config points at; containers: the docker-compose images via testcontainers",
    )
    group.addoption("--pc-stack-file", default=None, help="stack.toml for --pc-stack local [compose/stack.toml]")
    group.addoption(
        "--pc-service-env",
        action="append",
        default=[],
        metavar="SERVICE:NAME=VALUE",
        help="extra environment for a service of the local stack (repeatable), e.g. to run the suites "
        "against a deliberately broken pipeline: consumer:FLUSH_INTERVAL_MS=60000",
    )
    group.addoption(
        "--pc-gate",
        action="store_true",
        help="deploy-gate mode: every skipped test is reported as failed (a gate that skipped checked nothing); "
        "inconclusive checks fail outcome.check() with or without it",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    service_env(config)  # a malformed option is a usage error before any test runs


def service_env(config: pytest.Config) -> dict[str, dict[str, str]]:
    """``--pc-service-env SERVICE:NAME=VALUE`` options as {service: {name: value}}."""
    env: dict[str, dict[str, str]] = {}
    for item in config.getoption("--pc-service-env"):
        service, _, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if not (service and name and eq):
            raise pytest.UsageError(f"--pc-service-env {item!r}: expected SERVICE:NAME=VALUE")
        env.setdefault(service, {})[name] = value
    return env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under ``--pc-gate`` a skip is a failure: a gate that skipped did not check anything."""
    report = yield
    if report.skipped and item.config.getoption("--pc-gate") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"--pc-gate: skipped tests fail the gate ({reason})"
    return report


def free_ports(names: list[str]) -> dict[str, int]:
    """One free loopback port per name (held open together so no two are the same)."""
    sockets = [socket.socket() for _ in names]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(names, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


@dataclass
class PipelineStack:
    """The stack under test: where it lives and how to reach it."""

    mode: str
    exports: dict[str, str] = field(default_factory=dict)  # environment the config reads
    local: LocalStack | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.exports}

    def require_local(self) -> LocalStack:
        """The local driver, for tests that stop, kill or restart services."""
        if self.local is None:
            pytest.skip(f"needs --pc-stack local (this run uses {self.mode}: services cannot be driven)")
        return self.local


@pytest.fixture(scope="session")
def pipeline_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineStack]:
    """The pipeline under test for the whole session; a stack this fixture started is torn down."""
    mode = request.config.getoption("--pc-stack")
    if mode == "external":
        yield PipelineStack(mode)
        return
    if mode == "containers":
        from pipeline_check.stack.containers import DockerUnavailable, container_stack

        try:
            stack = container_stack(request.config.getoption("--pc-stack-file"))
            exports = stack.__enter__()
        except DockerUnavailable as exc:
            pytest.skip(str(exc))  # under --pc-gate this skip fails the test
        try:
            yield PipelineStack(mode, exports)
        finally:
            stack.__exit__(None, None, None)
        return
    from pipeline_check.stack import LocalStack, load_stack

    stack_file = request.config.getoption("--pc-stack-file")
    spec = load_stack(Path(stack_file) if stack_file else None)
    local = LocalStack(
        load_stack(
            spec.file,
            run_dir=tmp_path_factory.mktemp("stack"),
            ports=free_ports(list(spec.ports)),
            service_env=service_env(request.config),
        )
    )
    try:
        local.up()
        yield PipelineStack(mode, dict(local.spec.exports), local)
    finally:
        local.down()


@pytest.fixture(scope="session")
def pipeline_config(request: pytest.FixtureRequest, pipeline_stack: PipelineStack) -> PipelineConfig:
    """The validated pipeline.toml, pointed at ``pipeline_stack``."""
    from pipeline_check.config import find_config, load_config

    path = request.config.getoption("--pc-config")
    return load_config(find_config(Path(path) if path else None), pipeline_stack.env())


Validator = Callable[..., "Outcome"]


@pytest.fixture
def validator(
    request: pytest.FixtureRequest, pipeline_config: PipelineConfig, record_property: Callable[[str, object], None]
) -> Validator:
    """``validator(scenario=None, *, config=None, thresholds=(), handlers=(), **load)`` runs one
    validation (``load``: count, rate, background_rate, drain_timeout, ...; ``handlers`` see every
    event, e.g. to act during the run or write a report) and returns its outcome; its SLA
    figures go into the JUnit XML as properties. ``outcome.check()`` raises an ``AssertionError``
    naming each failed check with observed vs threshold."""
    from pipeline_check.asyncutil import run_sync
    from pipeline_check.engine import run_async
    from pipeline_check.reporting.junit import figures

    def run_validation(
        scenario: str | None = None,
        *,
        config: PipelineConfig | None = None,
        thresholds: tuple[str, ...] = (),
        handlers: Iterable[Handler] = (),
        **load: Any,
    ) -> Outcome:
        settings = (config or pipeline_config).with_overrides(scenario, thresholds=thresholds, **load)
        stack = None
        if scenario is not None and settings.scenario(scenario).faults:
            # a scenario's faults act through the session's own stack driver, which then knows what changed
            stack = request.getfixturevalue("pipeline_stack").local
        outcome = run_sync(run_async(settings, scenario, handlers, stack=stack))
        for name, value in figures(outcome.finished).items():
            record_property(name, value)
        return outcome

    return run_validation


@pytest.fixture
def inject(pipeline_config: PipelineConfig, validator: Validator) -> Callable[..., Outcome]:
    """``inject(n, stage="api", rate=100)``: send ``n`` canaries, wait until each reached ``stage``
    (later stages are not probed), return the outcome; its ``book`` holds every observation."""

    def send(n: int, stage: str | None = None, *, rate: float = 100.0, **load: Any) -> Outcome:
        config = pipeline_config
        if stage is not None:
            if stage not in config.stage_names():
                raise ValueError(f"stage {stage!r} is not configured; configured: {config.stage_names()}")
            config = config.only_stages(stage)
        config = config.model_copy(update={"sla": config.sla.model_copy(update={"thresholds": ("lost == 0",)})})
        return validator(config=config, count=n, rate=rate, **load)

    return send
