"""NOTIFY's commit-time lock, measured: several producer processes publish one event per
transaction as fast as they can, for a few seconds, with each wake-up kind in turn.

PostgreSQL serialises the commits of transactions that notified (a lock taken before the commit
record is written and held until it is flushed), so that notifications are queued in commit
order; a transaction that did not notify does not take it. This measures what that costs
publishers side by side, against the same transactions waking the relay through Redis and
against no wake-up at all:

    .venv/bin/python -m bench.commit_lock --producers 1,2,4,8 --seconds 5 --rounds 2 \\
        --redis-url redis://127.0.0.1:6379/6 --database-prefix shop_hn

Modes, alternated within each round: ``none`` (the publish without any wake-up), ``redis``
(``SET NX`` after commit; no relay runs here, so the flag stays up and a Celery message goes
out every ``FLAG_SECONDS`` only: the publisher's cheapest case), ``notify`` (``pg_notify`` in
the publish statement, ``OUTBOX["WAKE_BY_NOTIFY"]``). It creates a database of its own
(``<prefix>_lock_<random>``), migrates it and drops it at the end, and empties its Redis
database (give it one of your own) when done.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "redis", "notify")


def child(mode: str, seconds: float) -> None:
    """One producer: set up and warm, say so, wait for the word, then transactions of one
    publish each for ``seconds``."""
    import django

    django.setup()
    from django.db import connection, transaction

    import outbox.publisher
    from bench.benchapp.events import Ping
    from outbox import publish

    if mode == "none":
        outbox.publisher._wake_relay_on_commit = lambda connection, using: None
    connection.ensure_connection()
    for n in range(20):  # warm: the statement's shape, the Redis client
        with transaction.atomic():
            publish(Ping(ping_id=n, tag="warm"))
    print("ready", flush=True)
    sys.stdin.readline()
    stop_at = time.monotonic() + seconds
    count, busy, n = 0, 0.0, 0
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        with transaction.atomic():
            publish(Ping(ping_id=n, tag="lock"))
        busy += time.perf_counter() - began
        count += 1
        n += 1
    print(json.dumps({"transactions": count, "busy_seconds": busy}), flush=True)


def measure(env: dict, mode: str, producers: int, seconds: float) -> dict:
    env = {**env, "OUTBOX_WAKE_BY_NOTIFY": "1" if mode == "notify" else "0"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.commit_lock", "--child", mode, str(seconds)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(producers)
    ]
    for proc in procs:  # every producer set up and warm before any begins
        while proc.stdout.readline().strip() != "ready":
            pass
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    total = sum(r["transactions"] for r in results)
    busy = sum(r["busy_seconds"] for r in results)
    return {
        "mode": mode,
        "producers": producers,
        "transactions_per_second": total / seconds,
        "mean_transaction_ms": 1000 * busy / total,
    }


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--redis-url", required=True, help="a Redis database of your own (emptied)")
    p.add_argument("--database-prefix", default="shop_bench")
    p.add_argument("--producers", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    import redis

    from bench.system import child_env
    from harness.services import Database, PostgresServer

    server = PostgresServer.from_url(args.postgres_url)
    database = Database(server, f"{args.database_prefix}_lock_{secrets.token_hex(4)}")
    run_dir = (
        ROOT / "var" / "bench" / f"commit-lock-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    (run_dir / "prometheus").mkdir(parents=True)
    # What the bench's processes get (its keys, production switches), on this database.
    env = child_env(database_url=database.url, redis_url=args.redis_url, run_dir=run_dir)
    rows = []
    with server.connect() as conn:
        load_before = os.getloadavg()
        settings_facts = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "synchronous_commit", "fsync")
        }
    database.create()
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        for round_ in range(args.rounds):
            for producers in [int(n) for n in args.producers.split(",")]:
                for mode in MODES if round_ % 2 == 0 else reversed(MODES):
                    row = {"round": round_ + 1, **measure(env, mode, producers, args.seconds)}
                    rows.append(row)
                    print(
                        f"round {row['round']} producers {producers:2d} {mode:6s} "
                        f"{row['transactions_per_second']:8.1f} tx/s "
                        f"{row['mean_transaction_ms']:7.2f} ms/tx",
                        flush=True,
                    )
    finally:
        database.drop()
        redis.Redis.from_url(args.redis_url).flushdb()
    report = {
        "argv": sys.argv[1:],
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "postgres": settings_facts,
        "rows": rows,
    }
    print(f"load average before {load_before}, after {report['load_after']}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
