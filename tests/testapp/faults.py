"""Fault points of the crash tests, armed in a child process by the environment.

``SHOP_TEST_FAULT=kill@POINT`` kills the process (SIGKILL, nothing runs after it) when it reaches
POINT; ``hold@POINT`` makes it wait there until the test lets it go (the file ``release`` in
``SHOP_TEST_FAULT_DIR``), after saying it arrived (the file ``reached``). Unarmed, a fault point
does nothing, so the subscribers behave normally in every other test.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

HOLD_SECONDS = 60


def fault_point(name: str) -> None:
    action, _, point = os.environ.get("SHOP_TEST_FAULT", "").partition("@")
    if point != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hold":
        folder = Path(os.environ["SHOP_TEST_FAULT_DIR"])
        (folder / "reached").touch()
        deadline = time.monotonic() + HOLD_SECONDS
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
