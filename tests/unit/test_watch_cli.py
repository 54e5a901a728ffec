"""``pipeline-check watch`` from the command line: bad input is one line and exit 2 before anything
runs, and SIGTERM or Ctrl-C stop a running watch cleanly with exit 0 (its port released)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from pipeline_check.cli import main
from pipeline_check.core.errors import ExitCode
from pipeline_check.core.polling import poll
from tests.support import memory

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[source]
type = "memory"
{source}

[stages.api]
type = "memory"
delay = 0.01
"""
# the memory plugins exist only in a process that registers them
RUN_CLI = (
    "import sys; from tests.support import memory; memory.register(); "
    "from pipeline_check.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(autouse=True)
def memory_plugins() -> None:
    memory.register()


def config(tmp_path: Path, source: str = "") -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(source=source))
    return str(path)


@pytest.fixture
def held_port() -> tuple[str, int]:
    """A port some other socket listens on for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--window", "5x"], "--window='5x' (str): is not a duration above zero; write it with a unit"),
        (["--grace", "0s"], "--grace='0s' (str): is not a duration above zero"),
        (["--listen", "nowhere"], "--listen='nowhere' (str): is not HOST:PORT; write e.g. 127.0.0.1:9464"),
        (["--listen", "127.0.0.1:99999"], "--listen='127.0.0.1:99999' (str): is not HOST:PORT"),
        (["--rate", "100000", "--window", "60m"], "--rate=100000.0 (float): with a 3600s window"),
        (["--rate", "0"], "Invalid value for '--rate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["watch", "-c", config(tmp_path), "--listen", "127.0.0.1:0", *args])
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE_ERROR, out + err
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_a_taken_port_is_one_line_and_exit_2(
    tmp_path: Path, held_port: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = held_port
    code = main(["watch", "-c", config(tmp_path), "--listen", f"{host}:{port}"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE_ERROR
    assert f"--listen='{host}:{port}' (str): cannot listen" in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_unreachable_source_at_startup_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["watch", "-c", config(tmp_path, "unreachable = true"), "--listen", "127.0.0.1:0"])
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE_ERROR
    assert "source.pipe='default' (endpoint): nobody listens; start the pipe" in err
    assert len(err.strip().splitlines()) == 1, err
    assert "serving http://127.0.0.1:" in out  # it was serving, and stopped again


class WatchProcess:
    """``pipeline-check watch`` in a child process, its output read line by line on a thread."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, *argv],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_line(self, text: str, timeout: float) -> str:
        def next_match() -> str | None:
            while not self.lines.empty():
                line = self.lines.get()
                self.output.append(line)
                if text in line:
                    return line
            return None

        found = poll(next_match, timeout)
        assert found, f"no line with {text!r} within {timeout:g}s; output: {''.join(self.output)}"
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)  # it ends at the end of the output
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_watch_cleanly_with_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    child = WatchProcess(["watch", "-c", config(tmp_path), "--rate", "20", "--listen", "127.0.0.1:0"])
    try:
        line = child.wait_line("serving http://", 30)
        url = line.split()[1].removesuffix("/metrics,")
        healthy = poll(lambda: httpx.get(url + "/healthz", timeout=5).status_code == 200, 30)
        assert healthy, "the watch never became healthy"
        child.proc.send_signal(sig)
        assert child.proc.wait(timeout=30) == 0
        child.wait_line("watch stopped", 5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz", timeout=5)
    finally:
        child.stop()
