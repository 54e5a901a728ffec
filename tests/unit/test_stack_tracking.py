"""Profiles you cannot lose track of: the home records which stack runs there; commands that name no profile
act on it, commands that name another are refused, ``stack status`` exits 1 unless every service runs and
is healthy; quorum groups start and stop together. The services are ``sleep`` processes whose health checks
are sockets the test holds open; they are started through the driver (whose teardown stops and reaps them:
a ``stack up`` in this process would leave its children unreaped) and inspected and stopped through the
command line."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pipeline_check.cli import main
from pipeline_check.core.errors import StackError
from pipeline_check.pytest_plugin import free_ports
from pipeline_check.stack.local import LocalStack
from pipeline_check.stack.record import RECORD_FILE, read_record
from pipeline_check.stack.spec import load_stack

BASE = """
[stack]
name = "base"
run_dir = "run"
[ports]
a = {a}
[services.a]
command = ["sleep", "600"]
health = {{ tcp = "127.0.0.1:{{port.a}}" }}
[services.extra]
optional = true
command = ["sleep", "600"]
health = {{ tcp = "127.0.0.1:{{port.a}}" }}
"""

PROFILE = """
[stack]
extends = "../stack.toml"
name = "other-stack"
run_dir = "../run/other"
[ports]
b = {b}
[services.b]
command = ["sleep", "600"]
health = {{ tcp = "127.0.0.1:{{port.b}}" }}
"""

# a member of a quorum: listens for its peer, becomes healthy (its own port) only once the peer listens too;
# on SIGTERM it notes the time in a file and takes a second to stop
QUORUM_MEMBER = """
import pathlib, signal, socket, sys, time
own_peer, other_peer, health = map(int, sys.argv[1:4])
def stop(*_):
    pathlib.Path(sys.argv[4]).write_text(str(time.time()))
    time.sleep(1)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
peer = socket.create_server(("127.0.0.1", own_peer))
while True:
    try:
        socket.create_connection(("127.0.0.1", other_peer), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
ready = socket.create_server(("127.0.0.1", health))
time.sleep(600)
"""

QUORUM = """
[stack]
name = "quorum"
[ports]
p1 = {p1}
p2 = {p2}
h1 = {h1}
h2 = {h2}
[services.n1]
group = "q"
command = ["{python}", "-c", {code}, "{{port.p1}}", "{{port.p2}}", "{{port.h1}}", "{{run_dir}}/n1.term"]
health = {{ tcp = "127.0.0.1:{{port.h1}}" }}
start_timeout = {timeout}
[services.n2]
group = "q"
command = ["{python}", "-c", {code}, "{{port.p2}}", "{{port.p1}}", "{{port.h2}}", "{{run_dir}}/n2.term"]
health = {{ tcp = "127.0.0.1:{{port.h2}}" }}
start_timeout = {timeout}
"""


class Listening:
    """Ports the test holds open so the ``tcp`` health checks pass (closed: they fail)."""

    def __init__(self) -> None:
        self.sockets: dict[int, socket.socket] = {}

    def open(self, port: int) -> None:
        self.sockets[port] = socket.create_server(("127.0.0.1", port))

    def close(self, port: int) -> None:
        self.sockets.pop(port).close()


@pytest.fixture
def listening() -> Iterator[Listening]:
    held = Listening()
    yield held
    for s in held.sockets.values():
        s.close()


class Stacks:
    """A base stack (service ``a``, optional ``extra``) and its profile ``other`` (adds ``b``), home
    ``<tmp>/run``; each driver it opens is stopped at the end."""

    def __init__(self, folder: Path) -> None:
        ports = free_ports(["a", "b"])
        self.file = folder / "stack.toml"
        self.file.write_text(BASE.format(**ports))
        self.profile = folder / "profiles" / "other.toml"
        self.profile.parent.mkdir()
        self.profile.write_text(PROFILE.format(**ports))
        self.home = folder / "run"
        self.ports = ports
        self.opened: list[LocalStack] = []

    def up(self, profile: bool = False, run_dir: Path | None = None) -> LocalStack:
        local = LocalStack.open(self.profile if profile else self.file, run_dir=run_dir)
        self.opened.append(local)
        local.up()
        return local

    def cli(self, *args: str) -> int:
        return main(["stack", *args, "--stack-file", str(self.file)])


@pytest.fixture
def stacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listening: Listening) -> Iterator[Stacks]:
    monkeypatch.delenv("PIPELINE_CHECK_STACK_DIR", raising=False)
    made = Stacks(tmp_path)
    for port in made.ports.values():
        listening.open(port)
    yield made
    for local in made.opened:
        local.down()


def test_commands_that_name_no_profile_act_on_the_one_running(
    stacks: Stacks, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = stacks.up(profile=True)
    record = read_record(stacks.home)
    assert record is not None and record.file == stacks.profile and record.run_dir == stacks.home / "other"
    running = [psutil.Process(profile.pid(name) or 0) for name in ("a", "b")]

    assert stacks.cli("status") == 0
    out = capsys.readouterr().out
    assert "other-stack" in out and "profile 'other'" in out and "b " in out

    assert stacks.cli("down") == 0
    assert "stack 'other-stack' down" in capsys.readouterr().out
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running)
    assert not (stacks.home / RECORD_FILE).exists()  # nothing runs there any more
    assert stacks.cli("status") == 1  # back to the default stack, which does not run
    assert "market" not in capsys.readouterr().out


def test_a_run_dir_given_is_the_home(stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "elsewhere"
    stacks.up(profile=True, run_dir=folder)  # the profile's own folder and its home
    assert stacks.cli("status") == 1  # the default home knows nothing of it
    capsys.readouterr()
    assert stacks.cli("status", "--run-dir", str(folder)) == 0
    assert "other-stack" in capsys.readouterr().out
    assert stacks.cli("down", "--run-dir", str(folder)) == 0
    # the profile's state.json, left in the folder, says nothing about the default stack's services or ports
    assert stacks.cli("status", "--run-dir", str(folder)) == 1
    out = capsys.readouterr().out
    assert "the default stack" in out and "b " not in out


def test_a_command_naming_another_stack_is_refused_naming_the_one_running(
    stacks: Stacks, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks.up(profile=True)
    capsys.readouterr()
    assert stacks.cli("up") == 2  # the default stack would start beside it, on the same ports
    err = capsys.readouterr().err
    assert "profile 'other' runs in" in err and "(a, b;" in err and RECORD_FILE in err, err
    assert LocalStack(load_stack(stacks.file)).running() == []  # nothing started
    assert stacks.cli("status", "--profile", "other") == 0  # naming the running one is fine
    with pytest.raises(StackError, match=r"profile 'other' runs in .*not the default stack"):
        LocalStack.open(stacks.file)  # the library refuses as the command line does


def test_down_naming_another_profile_is_refused(stacks: Stacks, capsys: pytest.CaptureFixture[str]) -> None:
    base = stacks.up()
    capsys.readouterr()
    assert stacks.cli("down", "--profile", "other") == 2
    assert "the default stack runs in" in capsys.readouterr().err
    assert base.running() == ["a"]  # still up
    assert stacks.cli("status", "--profile", "other") == 2


def test_a_stale_record_is_ignored(stacks: Stacks) -> None:
    stacks.home.mkdir()
    stale = {"stack": "other-stack", "label": "profile 'other'", "file": str(stacks.profile)}
    (stacks.home / RECORD_FILE).write_text(json.dumps({**stale, "run_dir": str(stacks.home / "other")}))
    local = stacks.up()  # nothing of the recorded stack runs: not a reason to refuse
    record = read_record(stacks.home)
    assert record is not None and record.names(local.spec)


def test_a_record_that_says_nothing_is_an_error_naming_it(stacks: Stacks) -> None:
    stacks.home.mkdir()
    (stacks.home / RECORD_FILE).write_text("{")
    with pytest.raises(StackError, match=rf"{RECORD_FILE} does not say which stack runs there.*delete it"):
        LocalStack.open(stacks.file)


def test_status_exits_1_unless_each_service_runs_and_is_healthy(
    stacks: Stacks, listening: Listening, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stacks.cli("status") == 1  # nothing runs
    assert "not running and healthy: a (stopped)" in capsys.readouterr().err
    local = stacks.up()
    assert stacks.cli("status") == 0  # the optional service nobody started does not count
    listening.close(stacks.ports["a"])
    capsys.readouterr()
    assert stacks.cli("status") == 1
    assert "a (unhealthy)" in capsys.readouterr().err
    listening.open(stacks.ports["a"])
    local.start("extra")
    died = psutil.Process(local.pid("extra") or 0)  # an optional service that was started and died
    died.kill()
    died.wait(5)
    assert stacks.cli("status") == 1
    assert "extra (exited)" in capsys.readouterr().err


Quorum = Callable[[float], LocalStack]


@pytest.fixture
def quorum(tmp_path: Path) -> Iterator[Quorum]:
    """``quorum(start_timeout)``: two services that are healthy only once both run, as a group."""
    made: list[LocalStack] = []

    def make(timeout: float) -> LocalStack:
        ports = free_ports(["p1", "p2", "h1", "h2"])
        path = tmp_path / "stack.toml"
        path.write_text(QUORUM.format(python=sys.executable, code=json.dumps(QUORUM_MEMBER), timeout=timeout, **ports))
        made.append(LocalStack(load_stack(path, run_dir=tmp_path / "run")))
        return made[-1]

    yield make
    for local in made:
        local.down()


def test_a_group_starts_and_stops_together(quorum: Quorum) -> None:
    local = quorum(30)
    reports = local.up()  # one by one, n1 would wait for n2 for ever
    assert [r.name for r in reports] == ["n1", "n2"]
    local.down()
    assert local.running() == []
    # both had SIGTERM before either stopped (one after the other, a second would lie between)
    n1, n2 = (float((local.spec.run_dir / f"{n}.term").read_text()) for n in ("n1", "n2"))
    assert abs(n1 - n2) < 0.9, (n1, n2)


def test_a_member_started_alone_names_its_stopped_group(quorum: Quorum) -> None:
    with pytest.raises(StackError, match=r"not healthy after 2s .*its group 'q', of which n2 do not run"):
        quorum(2).start("n1")


def test_up_only_some_services_starts_just_those(stacks: Stacks) -> None:
    local = LocalStack.open(stacks.profile)
    stacks.opened.append(local)
    local.up(only=["b"])  # a benchmark's brokers without the pipeline
    assert local.running() == ["b"]
    local.up(only=["extra"])  # an optional one, named
    assert sorted(local.running()) == ["b", "extra"]
    with pytest.raises(StackError, match="unknown service"):
        local.up(only=["nope"])
