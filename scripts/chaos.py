"""`make chaos`: fault injection against the real processes on PostgreSQL + Redis.

Starts every process of the Procfile on a fresh database and a private Redis, drives a bounded
load of orders through the HTTP API while killing and restarting processes and Redis at random
moments, waits until the system is quiet, then checks that nothing was lost or done twice.
Exits 1 on any violation. See docs/chaos.md; the code is in scripts/chaos/.

    .venv/bin/python scripts/chaos.py --orders 3000
"""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
# The package next to this file (scripts/chaos/), and the project for django.setup().
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]

from chaos.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
