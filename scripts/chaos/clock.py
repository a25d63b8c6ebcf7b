"""The run's clock and its console: every line says when, since the run began."""

from __future__ import annotations

import sys
import threading
import time

_started = time.monotonic()
_lock = threading.Lock()


def since_start(moment: float | None = None) -> float:
    """Seconds from the start of the run to ``moment`` (a time.monotonic()), or to now."""
    return (time.monotonic() if moment is None else moment) - _started


def say(message: str) -> None:
    """Print one line, prefixed with the run's clock; safe from any thread."""
    with _lock:
        print(f"[{since_start():7.1f}s] {message}", file=sys.stdout, flush=True)
