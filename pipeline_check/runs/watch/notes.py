"""Notes a watch tells as it goes (a subscriber came back, a probe failed): passed on at once, the last
few kept for ``/status``. Bounded, unlike a run's note buffer: a watch lives for days."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

RECENT = 20


class Notes:
    """Passes each note to ``emit``; a note that repeats the one before is dropped (an endpoint that stays
    down is one note, not one per poll)."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._emit = emit
        self.recent: deque[tuple[float, str]] = deque(maxlen=RECENT)  # (wall-clock seconds, note)
        self._last = ""

    def note(self, message: str) -> None:
        if message == self._last:
            return
        self._last = message
        self.recent.append((time.time(), message))
        if self._emit is not None:
            self._emit(message)
