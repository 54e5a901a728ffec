"""Which stack runs in a run folder: ``<home>/running.json``, written when a stack's first service starts
and removed when its last one stops.

Every profile of a stack file shares one home (the base file's run folder, or the ``--run-dir`` given), so a
command that names no profile finds the one that runs there, and one that names another is refused rather
than started beside it on the same ports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline_check.core.atomic_files import write_atomically
from pipeline_check.core.errors import StackError
from pipeline_check.stack.spec import StackSpec

RECORD_FILE = "running.json"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The stack a home records as running: its file and its own run folder."""

    path: Path  # the record itself
    file: Path
    run_dir: Path
    label: str  # how messages name it (spec.label)

    def names(self, spec: StackSpec) -> bool:
        return self.file == spec.file and self.run_dir == spec.run_dir


def read_record(home: Path) -> RunRecord | None:
    """The record in ``home``, or None when there is none."""
    path = home / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        return RunRecord(path, Path(data["file"]), Path(data["run_dir"]), str(data["label"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"{path} does not say which stack runs there ({type(exc).__name__}: {exc}); "
            "if no stack runs there, delete it"
        ) from None


def write_record(spec: StackSpec) -> None:
    """Record ``spec`` as the stack running in its home (unless it already is)."""
    current = read_record(spec.record_dir)
    if current is not None and current.names(spec):
        return
    data = {"stack": spec.name, "label": spec.label, "file": str(spec.file), "run_dir": str(spec.run_dir)}
    write_atomically(spec.record_dir / RECORD_FILE, json.dumps(data, indent=2))


def clear_record(spec: StackSpec) -> None:
    """Remove the record if it names ``spec`` (nothing of it runs any more)."""
    current = read_record(spec.record_dir)
    if current is not None and current.names(spec):
        current.path.unlink(missing_ok=True)
