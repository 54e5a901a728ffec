"""Report files: written atomically, and checked writable before a run spends any time."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline_check.core.errors import ConfigError


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename, so a reader
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable(path: Path, setting: str) -> None:
    """``ConfigError`` unless ``path`` can be written (its folder is created if missing): a report that
    cannot be written must stop the run before it starts, not turn a verdict into a crash after it."""
    if path.is_dir():
        raise ConfigError(setting, str(path), "is a directory", "give a file path, e.g. reports/validation.json")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".check")
    except OSError as exc:
        raise ConfigError(
            setting, str(path), f"cannot be written ({exc.strerror or exc})", "choose a writable path"
        ) from None
    os.close(fd)
    os.unlink(probe)
