"""The worker's handling path alone: CPU, SQL statements and commits per no-op delivery when
``deliveries_run`` (the ``outbox.deliver`` task's body) handles 50-id messages, with
``DELIVERY_BATCH_SIZE`` 20 and 1 alternated in one process (so both see the same load).

No broker, relay or Celery: what it measures is the transaction per delivery that several
deliveries per transaction removes (docs/benchmarks.md, "Several deliveries per transaction").
It publishes ``bench.Ping`` events (the no-op subscriber, which records nothing without
``BENCH_RECORD_REDIS_URL``) into the database that ``DATABASE_URL`` names, migrated, with the
bench app installed:

    createdb -h 127.0.0.1 -U postgres shop_bench_batch
    export SHOP_BENCH_APPS=1 LOG_LEVEL=WARNING \\
        DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_bench_batch
    .venv/bin/python manage.py migrate -v0
    .venv/bin/python -m bench.delivery_batch --deliveries 1000 --rounds 8
    dropdb -h 127.0.0.1 -U postgres shop_bench_batch
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="per round (1000)")
    parser.add_argument("--rounds", type=int, default=8, help="alternated, half each (8)")
    parser.add_argument("--batch-size", type=int, default=20, help="the batched rounds' (20)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, transaction

    import outbox.publisher
    from bench.benchapp.events import Ping
    from outbox import publish
    from outbox.continuation import deliveries_run
    from outbox.models import Delivery

    outbox.publisher.relay_wake = lambda: None  # no relay here
    counts = {"statements": 0, "commits": 0}

    def watch(execute, sql, params, many, context):
        counts["statements"] += 1
        return execute(sql, params, many, context)

    commit = connection.commit

    def counting_commit():
        counts["commits"] += 1
        return commit()

    connection.commit = counting_commit
    results: dict[int, list[tuple[float, float, float, float]]] = {}
    for round_ in range(args.rounds):
        size = args.batch_size if round_ % 2 == 0 else 1
        settings.OUTBOX = {**settings.OUTBOX, "DELIVERY_BATCH_SIZE": size}
        for start in range(0, args.deliveries, 100):
            with transaction.atomic():
                for i in range(start, min(start + 100, args.deliveries)):
                    publish(Ping(ping_id=i, tag="delivery_batch"))
        ids = list(
            Delivery.objects.filter(status="pending").order_by("pk").values_list("pk", flat=True)
        )
        counts.update(statements=0, commits=0)
        cpu, wall = time.process_time(), time.perf_counter()
        with connection.execute_wrapper(watch):
            for i in range(0, len(ids), 50):
                deliveries_run(ids[i : i + 50])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if Delivery.objects.filter(status="pending").exists():
            raise SystemExit("some deliveries are still pending")
        n = len(ids)
        row = (cpu * 1000 / n, wall * 1000 / n, counts["statements"] / n, counts["commits"] / n)
        results.setdefault(size, []).append(row)
        print(
            f"round {round_} batch size {size}: {n} deliveries; per delivery CPU {row[0]:.3f} ms, "
            f"wall {row[1]:.3f} ms, {row[2]:.2f} statements, {row[3]:.3f} commits",
            flush=True,
        )
    for size, rows in results.items():
        print(
            f"batch size {size}: median per delivery CPU "
            f"{statistics.median(r[0] for r in rows):.3f} ms, wall "
            f"{statistics.median(r[1] for r in rows):.3f} ms, {rows[0][2]:.2f} statements "
            f"(BEGIN/COMMIT not counted), {rows[0][3]:.3f} commits"
        )


if __name__ == "__main__":
    main()
