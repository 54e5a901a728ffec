"""promtool for the watch's tests: on the PATH, or where ``make setup`` puts it (``.tools/bin``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "promtool"


def path() -> str | None:
    return shutil.which("promtool") or (str(TOOL) if TOOL.is_file() else None)


needed = pytest.mark.skipif(
    path() is None, reason="promtool not installed: `make setup` takes it from Debian's prometheus package"
)


def run(*args: str, text_input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS``; fails the test when it is missing (mark the test ``needed``)."""
    tool = path()
    assert tool is not None, "promtool is not installed"
    return subprocess.run([tool, *args], input=text_input, capture_output=True, text=True, timeout=60)
