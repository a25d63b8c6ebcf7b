"""Where the time goes: summaries of py-spy's raw (collapsed-stack) profiles.

``bench/run.py --profile`` records the relay (relay dispatch, end-to-end outbox variant) and
the worker with its pool processes (end-to-end outbox variant) with
``py-spy record --idle --format raw``. Each sample is put in the first category whose marker
appears in its stack (the order below matters), and the shares are given of the samples in
which the process was doing something (waiting for the next message is left out).

    .venv/bin/python -m bench.profile var/bench/<ts>/profile
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

# (category, markers): a sample belongs to the first category with a marker in its stack.
CATEGORIES = [
    ("db: open a new connection", ("get_new_connection", "close_database")),
    ("db: commit", ("BaseDatabaseWrapper.commit", "Connection.commit")),
    ("logging", ("logging/__init__.py", "structlog/", "logcontext.py")),
    ("metrics", ("outbox/metrics.py", "prometheus_client/")),
    ("tracing", ("outbox/tracing.py", "opentelemetry/")),
    ("handler body", ("ping_noop", "handler_started")),
    ("relay: send to broker", ("deliveries_dispatch",)),
    ("relay: heartbeat", ("heartbeat (outbox/relay.py",)),
    ("db: queries (wait + ORM)", ("django/db/", "psycopg/")),
    ("outbox python", ("outbox/",)),
    ("celery/kombu per message", ("celery/", "kombu/", "billiard/", "redis/")),
]
# Leaf frames that mean "waiting for work", not doing it (unless psycopg or redis-py waits
# there for an answer).
IDLE_LEAVES = ("_epoll.poll", "EpollSelector.select", "Connection._recv (billiard", "sleep")
# Functions worth seeing by inclusive share.
WATCH = (
    "delivery_handle",
    "deliveries_claim",
    "deliveries_dispatch",
    "relay_run",
    "heartbeat",
    "event_load",
    "subscriber_get",
    "publish_many",
    "relay_wake",
    "_count_on_commit",
    "log_fields",
    "handler_span",
    "fast_trace_task",
    "on_task_received",
    "close_database",
    "get_new_connection",
)


def _load(path: Path):
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarise(path: Path) -> dict:
    """Per process role (main, or pool child): busy samples by category and watched functions."""
    roles: dict[str, dict] = {}
    for frames, count in _load(path):
        depth = sum(1 for f in frames if f.startswith("process "))
        role = "pool child" if depth >= 2 else "main process"
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        r = roles.setdefault(role, {"samples": 0, "busy": 0})
        r.setdefault("cat", collections.Counter())
        r.setdefault("fn", collections.Counter())
        r["samples"] += count
        joined = ";".join(code)
        waiting_on_a_service = "psycopg/" in joined or "redis/" in joined
        if not code or (code[-1].startswith(IDLE_LEAVES) and not waiting_on_a_service):
            continue
        r["busy"] += count
        for name, markers in CATEGORIES:
            if any(m in joined for m in markers):
                r["cat"][name] += count
                break
        else:
            r["cat"]["other"] += count
        names = {f.split(" (")[0] for f in code}
        for fn in WATCH:
            if any(n == fn or n.endswith("." + fn) for n in names):
                r["fn"][fn] += count
    out = {}
    for role, r in roles.items():
        busy = r["busy"] or 1
        out[role] = {
            "samples": r["samples"],
            "busy_pct_of_samples": round(100 * r["busy"] / (r["samples"] or 1), 1),
            "busy_by_category_pct": {
                k: round(100 * v / busy, 1) for k, v in r["cat"].most_common()
            },
            "busy_inclusive_pct": {k: round(100 * v / busy, 1) for k, v in r["fn"].most_common()},
        }
    return out


def summarise_dir(path: Path) -> dict:
    return {p.stem: summarise(p) for p in sorted(Path(path).glob("*.txt")) if p.stat().st_size}


if __name__ == "__main__":
    print(json.dumps(summarise_dir(Path(sys.argv[1])), indent=2))
