"""Per-process counts for the saga's cost per order: SQL statements a process sent and Celery
task messages it ran. Only with ``BENCH_COUNT=1`` (the saga scenario sets it for the processes
it starts; producers call ``install()`` themselves).

Statements are counted by a Django execute wrapper on every connection (transaction control,
BEGIN/COMMIT/savepoints, is not a statement here; PostgreSQL's commits are counted from
pg_stat_database). A Celery process adds its counts to the Redis hash ``bench:count`` after
each task (one pipelined round trip per task), the web process after each request, under the
process type the harness started it as (``BENCH_PROCESS``).
"""

from __future__ import annotations

import os

COUNT_KEY = "bench:count"

_counts = {"sql": 0, "tasks": 0}
_flushed = {"sql": 0, "tasks": 0}


def _count_statement(execute, sql, params, many, context):
    _counts["sql"] += 1
    return execute(sql, params, many, context)


def _wrap(sender, connection, **kwargs) -> None:
    if _count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_statement)


def counts() -> dict:
    return dict(_counts)


def _flush() -> None:
    from bench.benchapp.record import _redis

    client = _redis()
    if client is None:
        return
    kind = os.environ.get("BENCH_PROCESS", "other")
    pipe = client.pipeline(transaction=False)
    for name, value in _counts.items():
        delta = value - _flushed[name]
        if delta:
            pipe.hincrby(COUNT_KEY, f"{kind}:{name}", delta)
            _flushed[name] = value
    pipe.execute()


def _task_done(**kwargs) -> None:
    _counts["tasks"] += 1
    _flush()


def _request_done(**kwargs) -> None:
    _flush()


def install(*, flush: bool = True) -> None:
    """Count this process's statements (and, with ``flush``, its tasks and requests)."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection_created.connect(_wrap, dispatch_uid="bench-count-sql")
    for alias in connections:  # a connection opened before this call
        _wrap(None, connections[alias])
    if flush:
        from celery.signals import task_postrun
        from django.core.signals import request_finished

        task_postrun.connect(_task_done, dispatch_uid="bench-count-tasks", weak=False)
        request_finished.connect(_request_done, dispatch_uid="bench-count-requests", weak=False)


def read(client) -> dict[str, int]:
    """The hash as ``{"worker:sql": n, ...}``."""
    return {k: int(v) for k, v in client.hgetall(COUNT_KEY).items()}
