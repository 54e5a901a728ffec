"""The local stack driver: runs the services of a stack.toml as processes, in dependency order.

State (pids, ports, restarts) lives in ``<run_dir>/state.json`` so ``stack up`` in one command and
``stack status`` / ``stack down`` in the next see the same stack; the home records which stack runs there
(``stack.record``). Each service runs in its own process group (so stopping it stops whatever it spawned)
and logs to ``<run_dir>/logs/<service>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline_check.core.atomic_files import write_atomically
from pipeline_check.core.errors import PipelineCheckError, ServiceStartError, StackError
from pipeline_check.core.polling import poll
from pipeline_check.stack.health import HEALTH_CHECKS, Health
from pipeline_check.stack.prepare import PREPARERS
from pipeline_check.stack.record import RECORD_FILE, clear_record, read_record, write_record
from pipeline_check.stack.spec import ServiceSpec, StackSpec, load_stack

STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 30


@dataclass(slots=True)
class _ServiceState:
    """What state.json remembers of one service."""

    pid: int | None = None
    create_time: float | None = None
    started_at: float | None = None
    healthy_at: float | None = None
    restarts: int = 0
    starts: int = 0
    env_overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A service as ``stack status`` shows it."""

    name: str
    state: str  # running | stopped | exited
    healthy: bool | None  # None when not running
    health_detail: str
    pid: int | None
    uptime_s: float | None
    restarts: int
    optional: bool

    @property
    def ok(self) -> bool:
        """Running and healthy, or an optional service nobody started."""
        if self.state == "running":
            return self.healthy is True
        return self.optional and self.state == "stopped"

    @property
    def problem(self) -> str:
        """What is wrong, for a one-line summary (empty when ``ok``)."""
        if self.ok:
            return ""
        return f"{self.name} ({'unhealthy' if self.state == 'running' else self.state})"


@dataclass(frozen=True, slots=True)
class StartReport:
    """How long one service took from spawn to healthy."""

    name: str
    seconds: float


def _saved(spec: StackSpec) -> dict[str, Any]:
    """What ``<run_dir>/state.json`` says, if it is this stack's (another stack file that ran in the folder
    before says nothing about this one)."""
    path = spec.run_dir / "state.json"
    if not path.exists():
        return {}
    saved: dict[str, Any] = json.loads(path.read_text())
    return saved if saved.get("file", str(spec.file)) == str(spec.file) else {}


class LocalStack:
    """Start, inspect, stop, kill and restart the services of one stack."""

    def __init__(self, spec: StackSpec) -> None:
        self.spec = spec
        self._state_file = spec.run_dir / "state.json"
        self._logs = spec.run_dir / "logs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._state = {name: _ServiceState() for name in spec.services}
        for name, item in _saved(spec).get("services", {}).items():
            if name in self._state:
                self._state[name] = _ServiceState(**item)

    @classmethod
    def open(
        cls,
        file: Path | None = None,
        *,
        run_dir: Path | None = None,
        ports: Mapping[str, int] | None = None,
        follow: bool = False,
    ) -> LocalStack:
        """The stack of ``file`` in ``run_dir``, on the ports it already runs on unless ``ports`` says.

        While the home records another stack (a profile) as running: refused, or with ``follow`` that
        stack instead (commands that name no profile act on whatever runs)."""
        spec = load_stack(file, run_dir=run_dir, ports=ports)
        other = cls(spec).other_running()
        if other is not None:
            if not follow:
                raise StackError(other.refusal(f"not {spec.label}"))
            spec = other.spec
        saved_ports: dict[str, int] = _saved(spec).get("ports", {})
        if saved_ports:
            running = cls(spec).running()
            if ports and running and any(saved_ports.get(k) != v for k, v in ports.items()):
                raise StackError(
                    f"the stack in {spec.run_dir} already runs ({', '.join(running)}) on ports {saved_ports}; "
                    "run `pipeline-check stack down` before choosing other ports"
                )
            if not ports:
                spec = load_stack(spec.file, run_dir=spec.run_dir, ports=saved_ports, home=spec.home)
        return cls(spec)

    def running(self) -> list[str]:
        """The services whose process runs, in start order."""
        return [name for name in self.spec.start_order() if self._running(name)]

    def other_running(self) -> LocalStack | None:
        """The other stack the home records as running (with a service that runs), or None."""
        record = read_record(self.spec.record_dir)
        if record is None or record.names(self.spec):
            return None
        try:
            other = LocalStack(load_stack(record.file, run_dir=record.run_dir, home=self.spec.record_dir))
        except PipelineCheckError as exc:
            raise StackError(
                f"{record.path} says {record.label} runs in {record.run_dir}, which cannot be read ({exc}); "
                "if nothing of it runs, delete that file"
            ) from None
        return other if other.running() else None

    def refusal(self, why: str) -> str:
        """Why a command cannot act beside this (running) stack, and what to do."""
        return (
            f"{self.spec.label} runs in {self.spec.run_dir} ({', '.join(self.running())}; recorded in "
            f"{self.spec.record_dir / RECORD_FILE}), {why}: `pipeline-check stack down` stops it and commands "
            "that name no profile act on it (give them the same --run-dir, if any)"
        )

    # -- whole stack -------------------------------------------------------------------------------

    def up(self, with_optional: Iterable[str] = (), only: Iterable[str] | None = None) -> list[StartReport]:
        """Start every non-optional service (plus ``with_optional``; or ``only`` these and what they depend
        on) in dependency order, each healthy before its dependents start; the stopped members of a
        ``group`` are spawned together, then each waited for (a Raft quorum answers only once most of its
        voters run). On a failure everything is stopped and the error raised."""
        extra = set(with_optional) | set(only or ())
        unknown = extra - set(self.spec.services)
        if unknown:
            raise StackError(f"unknown service(s) {sorted(unknown)}; services: {', '.join(self.spec.services)}")
        wanted = set(only) if only is not None else {n for n, s in self.spec.services.items() if not s.optional} | extra
        order = self.spec.start_order(wanted)
        reports: list[StartReport] = []
        try:
            for name in order:
                if any(r.name == name for r in reports) or (self._running(name) and self.health(name).ok):
                    continue
                together = [n for n in self._group_of(name, order) if n == name or not self._running(n)]
                reports.extend(self._start_together(together))
        except BaseException:
            self.down()
            raise
        return reports

    def _group_of(self, name: str, among: list[str]) -> list[str]:
        """``name`` and the members of its group in ``among``, in that order (just ``name`` without a group)."""
        group = self.spec.services[name].group
        return [n for n in among if n == name or (group is not None and self.spec.services[n].group == group)]

    def reset(self) -> list[StartReport]:
        """Back to the declared stack: restart services running with overridden variables, start
        the stopped ones. Tests that break the stack on purpose call it when done."""
        reports = [
            self.restart(n) for n in self.spec.start_order() if self._running(n) and self._state[n].env_overrides
        ]
        return reports + self.up()

    def down(self, names: Iterable[str] | None = None) -> None:
        """Stop every service (or just ``names``), dependents first; the members of a ``group`` together
        (the last voter of a quorum stopped alone waits in vain for the others to accept its shutdown)."""
        wanted = [n for n in reversed(self.spec.start_order()) if names is None or n in set(names)]
        done: set[str] = set()
        for name in wanted:
            if name not in done:
                together = self._group_of(name, wanted)
                self.stop_together(together)
                done.update(together)

    def status(self, *, check_health: bool = True) -> list[ServiceStatus]:
        """State, health, pid, uptime and restarts of each service, in start order."""
        result = []
        for name in self.spec.start_order():
            st = self._state[name]
            running = self._running(name)
            health = self.health(name) if running and check_health else None
            result.append(
                ServiceStatus(
                    name=name,
                    state="running" if running else ("exited" if st.pid else "stopped"),
                    healthy=None if health is None else health.ok,
                    health_detail="" if health is None else health.detail,
                    pid=st.pid if running else None,
                    uptime_s=time.time() - st.started_at if running and st.started_at else None,
                    restarts=st.restarts,
                    optional=self.spec.services[name].optional,
                )
            )
        return result

    # -- one service -------------------------------------------------------------------------------

    def start(self, name: str, env: Mapping[str, str] | None = None) -> StartReport:
        """Spawn ``name`` (``env`` overrides its variables for this start) and wait until healthy."""
        return self._start_together([name], env)[0]

    def _start_together(self, names: list[str], env: Mapping[str, str] | None = None) -> list[StartReport]:
        """Spawn each of ``names``, then wait until each is healthy."""
        began = time.monotonic()
        for name in names:
            self._spawn(name, env)
        reports = []
        for name in names:
            self.wait_healthy(name, self.spec.services[name].start_timeout)
            self._state[name].healthy_at = time.time()
            self._save()
            reports.append(StartReport(name, time.monotonic() - began))
        return reports

    def _spawn(self, name: str, env: Mapping[str, str] | None) -> None:
        """Prepare and start ``name``'s process, recording the stack as running in its home."""
        service = self._service(name)
        if self._running(name):
            raise StackError(f"service {name!r} is already running (pid {self._state[name].pid})")
        for dep in service.depends_on:
            if not self._running(dep):
                raise StackError(f"service {name!r} depends on {dep!r}, which is not running; start it first")
        other = self.other_running()
        if other is not None:
            raise StackError(other.refusal(f"so {self.spec.label} cannot start there"))
        write_record(self.spec)
        if service.prepare:
            PREPARERS[service.prepare.step](self.spec, service)
        self._logs.mkdir(parents=True, exist_ok=True)
        log_path = self._logs / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"--- {name} starting at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ---\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    service.command,
                    cwd=self.spec.compose_dir,
                    env={
                        **os.environ,
                        "PYTHONPATH": str(self.spec.compose_dir),
                        **service.env,
                        **(env or {}),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop/kill reach its children too
                )
            except OSError as exc:
                raise ServiceStartError(
                    name, f"cannot run {service.command[0]!r}: {exc}", None, "", str(log_path)
                ) from None
        self._children[name] = proc
        st = self._state[name]
        st.pid = proc.pid
        st.create_time = psutil.Process(proc.pid).create_time()
        st.started_at = time.time()
        st.restarts += 1 if st.starts else 0
        st.starts += 1
        st.env_overrides = dict(env or {})
        self._save()

    def wait_healthy(self, name: str, timeout: float) -> Health:
        """Poll the health check until it passes; raise with the log tail if the process dies or time runs out."""
        service = self._service(name)
        check = HEALTH_CHECKS[service.health_kind]
        last = Health(False, "not checked yet")

        def attempt() -> Health | None:
            nonlocal last
            if not self._running(name):
                raise ServiceStartError(
                    name, "the process exited", self._exit_code(name), self.logs(name), str(self._log_path(name))
                )
            last = check(service.health_target)
            return last if last.ok else None

        healthy = poll(attempt, timeout, initial=0.05)
        if healthy is None:
            stopped = [n for n in self._group_of(name, list(self.spec.services)) if not self._running(n)]
            hint = f"; it becomes healthy with its group {service.group!r}, of which {', '.join(stopped)} do not run"
            raise ServiceStartError(
                name,
                f"not healthy after {timeout:.0f}s ({last.detail}){hint if stopped else ''}",
                self._exit_code(name),
                self.logs(name),
                str(self._log_path(name)),
            )
        return healthy

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the service's process group; SIGKILL what is left after ``timeout``."""
        self.stop_together([name], timeout)

    def stop_together(self, names: list[str], timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM each service's process group at once; SIGKILL what is left of them after ``timeout``."""
        signalled = [n for n in names if self._signal(n, signal.SIGTERM)]
        if poll(lambda: not any(self._running(n) for n in signalled), timeout) is None:
            for name in signalled:
                self._signal(name, signal.SIGKILL)
            poll(lambda: not any(self._running(n) for n in signalled), 5.0)
        for name in names:
            self._forget(name)

    def kill(self, name: str) -> None:
        """SIGKILL the service's process group: no shutdown hooks run (a crash)."""
        if self._signal(name, signal.SIGKILL):
            poll(lambda: not self._running(name), 5.0)
        self._forget(name)

    def pause(self, name: str) -> None:
        """SIGSTOP the service's process group: it holds its sockets but answers nothing (a long GC pause,
        a frozen VM); a consumer paused past its session timeout is dropped from its group."""
        if not self._signal(name, signal.SIGSTOP):
            raise StackError(f"service {name!r} is not running: nothing to pause")

    def resume(self, name: str) -> None:
        """SIGCONT what ``pause`` stopped."""
        self._signal(name, signal.SIGCONT)

    def ensure(self, name: str, env: Mapping[str, str] | None = None) -> StartReport | None:
        """``name`` running with exactly ``env`` as its overrides: restarted only when it runs with others
        (or is stopped); None when it already ran that way."""
        wanted = dict(env or {})
        if self._running(name) and self._state[name].env_overrides == wanted:
            return None
        if self._running(name):
            return self.restart(name, wanted)
        return self.start(name, wanted)

    def restart(self, name: str, env: Mapping[str, str] | None = None) -> StartReport:
        """Stop then start ``name``; ``env`` overrides its variables for the new process."""
        self.stop(name)
        return self.start(name, env)

    def launch(self, name: str) -> None:
        """Spawn ``name`` again with the overrides it last ran with, without waiting for it to be healthy
        (``wait_healthy`` does): a cluster's node that the others stand in for while it boots."""
        self._spawn(name, self._state[name].env_overrides)

    def revive(self, name: str) -> StartReport:
        """Start ``name`` again with the overrides it last ran with, as a supervisor brings a crashed or
        stopped process back with its configuration (a fault must not also change the service)."""
        return self.start(name, self._state[name].env_overrides)

    def health(self, name: str) -> Health:
        service = self._service(name)
        return HEALTH_CHECKS[service.health_kind](service.health_target)

    def logs(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the service's log."""
        path = self._log_path(name)
        if not path.exists():
            return "(no log yet)"
        with path.open("rb") as fh:
            tail = deque(fh, maxlen=lines)
        return b"".join(tail).decode(errors="replace").rstrip("\n")

    def _log_path(self, name: str) -> Path:
        return self._logs / f"{self._service(name).name}.log"

    def pid(self, name: str) -> int | None:
        return self._state[name].pid if self._running(name) else None

    # -- internals ---------------------------------------------------------------------------------

    def _service(self, name: str) -> ServiceSpec:
        try:
            return self.spec.services[name]
        except KeyError:
            raise StackError(
                f"service {name!r} is not in {self.spec.file}; services: {', '.join(self.spec.services)}"
            ) from None

    def _process(self, name: str) -> psutil.Process | None:
        st = self._state[name]
        if st.pid is None:
            return None
        child = self._children.get(name)
        if child is not None and child.poll() is not None:  # reaps our own exited child
            return None
        try:
            proc = psutil.Process(st.pid)
            if st.create_time is not None and abs(proc.create_time() - st.create_time) > 0.01:
                return None  # the pid was reused by another process
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def _running(self, name: str) -> bool:
        return self._process(name) is not None

    def _exit_code(self, name: str) -> int | None:
        child = self._children.get(name)
        return None if child is None else child.poll()

    def _signal(self, name: str, sig: signal.Signals) -> bool:
        proc = self._process(name)
        if proc is None:
            return False
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _forget(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=5)
        st = self._state[name]
        st.pid = st.create_time = st.started_at = st.healthy_at = None
        self._save()
        if not self.running():
            clear_record(self.spec)

    def _save(self) -> None:
        data = {
            "stack": self.spec.name,
            "file": str(self.spec.file),
            "ports": dict(self.spec.ports),
            "services": {name: asdict(st) for name, st in self._state.items()},
        }
        write_atomically(self._state_file, json.dumps(data, indent=2))
