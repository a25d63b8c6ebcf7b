"""Unknown OUTBOX settings are refused when the process starts (the outbox app's ready())."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_an_unknown_outbox_setting_stops_the_process_at_start_up(tmp_path):
    settings = tmp_path / "typo_settings.py"
    settings.write_text('from shop.settings import *  # noqa\nOUTBOX = {"LEASE_SECOND": 5}\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "typo_settings",
    }
    run = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "ImproperlyConfigured" in run.stderr and "LEASE_SECOND" in run.stderr
