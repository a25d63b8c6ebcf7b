"""`make test`: the suite once on the embedded defaults, once on PostgreSQL + Redis.

The second pass needs both services. Where they are not reachable it is skipped with a notice,
unless CI is set: then it is a failure, so CI can never pass by skipping.
"""

import os
import socket
import subprocess
import sys
from urllib.parse import urlparse

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/shop")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = bool(os.environ.get("CI"))


def reachable(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def run_pass(title: str, env: dict) -> int:
    print(f"\n=== pytest: {title} ===", flush=True)
    cmd = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    return subprocess.call(cmd, env={**os.environ, **env})


def main() -> int:
    embedded = {"DATABASE_URL": "", "CELERY_BROKER_URL": ""}
    failed = run_pass("SQLite + embedded filesystem broker", embedded) != 0

    missing = [
        name
        for name, url in (("PostgreSQL", POSTGRES_URL), ("Redis", REDIS_URL))
        if not reachable(url)
    ]
    if missing:
        msg = f"{' and '.join(missing)} not reachable: the PostgreSQL + Redis pass cannot run"
        if IN_CI:
            print(f"\nFAIL: {msg} (CI is set)", flush=True)
            return 1
        print(f"\nNOTICE: {msg}; start them to run it (see README).", flush=True)
    else:
        services = {
            "DATABASE_URL": POSTGRES_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "CACHE_URL": REDIS_URL,
        }
        failed = run_pass("PostgreSQL + Redis", services) != 0 or failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
