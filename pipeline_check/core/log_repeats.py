"""Repeated log records collapsed: a client library that logs every refused connection to a dead broker
(aiokafka logs each at ERROR, hundreds a minute while a node is down) says it once, then once per interval
with the count it held back, so a run's captured output stays readable. Nothing is dropped without a trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

EVERY = 60.0  # seconds between two records of the same kind


@dataclass(slots=True)
class _Kind:
    shown_at: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """Passes the first record of each kind (logger, level, message template), then one per ``every``
    seconds, which tells how many of its kind were held back since the last one shown."""

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}
        self._lock = threading.Lock()  # records come from the loop and from worker threads

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind.shown_at < self.every:
                kind.held += 1
                return False
            held = kind.held if kind is not None else 0
            self._kinds[key] = _Kind(now)
        if held:
            more = f" ({held} more like this in the last {self.every:g}s were not shown)"
            record.msg = str(record.msg) + more.replace("%", "%%")
        return True


_FILTER = RepeatFilter()


def collapse_repeats(prefix: str) -> None:
    """Collapse repeats of the logger ``prefix`` and of every logger under it that exists now (a logger's
    filters do not reach its children, so each gets the shared filter; calling again covers new ones)."""
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix + "."))]
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
