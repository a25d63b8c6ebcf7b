"""Bus benchmark: externalisation rate, from a backlog in the outbox to confirmed by the broker.

    .venv/bin/python bench/bus_scenarios.py                       # both brokers, 20,000 events
    .venv/bin/python bench/bus_scenarios.py --events 5000 --only nats

``make bench`` runs the same measurement as its scenario ``bus`` (``externalisation_rate``
below, registered in bench/scenarios.py), on the bench's database. Run alone, as here, for
each broker: a database of its own on PostgreSQL (created, migrated, dropped), a namespace
of its own on the broker (deleted afterwards). It publishes a backlog of ``OrderCancelled``
events (externalised; their sealed ``customer_email`` travels as stored) and keeps only their
bus deliveries (notifications' are deleted before the clock starts: they are not the bus
path, and a claim would spend half of each batch leasing them), then times the loop the relay
and the ``bus`` queue's worker run between them (claim a batch of due deliveries, publish it,
wait for every confirm, mark the batch done) until nothing is due, in one process: the Celery
hop between the two is left out, so this is the rate of the bus path itself. Nothing is bound
to the events, so every message lands in the alternate exchange's quorum queue (RabbitMQ) or
the file-backed stream (NATS): the broker's durable write is in the figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BROKERS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "nats": "nats://127.0.0.1:4222",
}


def externalise(
    url: str,
    *,
    events: int,
    namespace: str,
    batch_size: int | None = None,
    processes: int = 1,
) -> dict:
    """Publish ``events`` externalised events, then time the bus path until every one is
    confirmed by the broker at ``url``; the namespace's topology is deleted afterwards.
    Django must be set up on a PostgreSQL database whose outbox tables are empty.

    ``processes`` > 1: that many forked processes drain the backlog side by side, each
    claiming and publishing its own batches, as the ``bus`` queue's worker processes do in
    production: one waits for the broker's confirms while another works in the database."""
    from django.conf import settings
    from django.db import connections, transaction
    from django.test import override_settings

    from orders.events import OrderCancelled
    from outbox import publish_many
    from outbox.bus import publishing
    from outbox.bus.conf import bus_settings
    from outbox.models import Delivery

    bus = {**getattr(settings, "EVENT_BUS", {}), "NAMESPACE": namespace}
    if batch_size:
        bus["BATCH_SIZE"] = batch_size
    with override_settings(EVENT_BUS_URL=url, EVENT_BUS=bus):
        publishing._adapter.cache_clear()
        for start in range(0, events, 1000):
            with transaction.atomic():
                publish_many(
                    OrderCancelled(
                        order_id=n, order_reference="", customer_email="", reason="payment_failed"
                    )
                    for n in range(start, min(events, start + 1000))
                )
        # Only the bus's deliveries: the event's local subscribers (notifications) are not
        # what this measures.
        Delivery.objects.exclude(subscriber="bus").delete()
        adapter = publishing.bus_adapter()
        adapter.topology_declare(service=None, event_types=())
        # No connection (nor NATS's event-loop thread) may cross a fork.
        adapter.close()
        publishing._adapter.cache_clear()
        connections.close_all()
        batch = bus_settings().BATCH_SIZE
        started = time.perf_counter()
        try:
            if processes == 1:
                parts = [_drain(batch)]
            else:
                context = multiprocessing.get_context("fork")
                with context.Pool(processes) as pool:
                    parts = pool.map(_drain, [batch] * processes)
            seconds = time.perf_counter() - started
            done = Delivery.objects.filter(subscriber="bus", status="done").count()
        finally:
            adapter = publishing.bus_adapter()
            adapter.topology_delete(services=[])
            adapter.close()
            publishing._adapter.cache_clear()
    totals = {key: sum(part[key] for part in parts) for key in parts[0]}
    return {
        "events": events,
        "confirmed": done,
        "seconds": seconds,
        "rate": done / seconds,
        "processes": processes,
        "batch_size": batch,
        "batches": totals["batches"],
        # Summed over the processes.
        "claiming_s": totals["claiming"],
        "encoding_s": totals["encode"],
        "publishing_s": totals["publish_batch"],
        # The draining processes' CPU (all threads: NATS's event loop too) per confirmed
        # event: less sensitive than the rate to what else the machine runs.
        "cpu_us_per_event": 1e6 * totals["cpu"] / max(done, 1),
        "checks_ok": done == events,
    }


def _drain(batch: int) -> dict:
    """Claim (as the relay does) and publish (as the ``bus`` worker does) until none is due."""
    from django.db import connections

    from outbox.bus import publishing
    from outbox.relay import deliveries_claim

    publishing._adapter.cache_clear()
    adapter = publishing.bus_adapter()
    spent = {"encode": 0.0, "publish_batch": 0.0}

    def timed(name: str):
        real = getattr(adapter, name)

        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t

        return run

    for name in spent:
        setattr(adapter, name, timed(name))
    cpu_started = time.process_time()
    batches, claiming = 0, 0.0
    try:
        while True:
            t = time.perf_counter()
            claimed = deliveries_claim(limit=batch)
            claiming += time.perf_counter() - t
            if not claimed:
                break
            publishing.bus_deliveries_publish(delivery_ids=[pk for pk, _ in claimed])
            batches += 1
        cpu = time.process_time() - cpu_started
    finally:
        for name in spent:
            delattr(adapter, name)
        adapter.close()
        publishing._adapter.cache_clear()
        connections.close_all()
    return {"batches": batches, "claiming": claiming, "cpu": cpu, **spent}


def child(
    broker: str,
    url: str,
    events: int,
    database_url: str,
    namespace: str,
    batch_size: int,
    processes: int,
) -> None:
    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="shop.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    r = externalise(
        url,
        events=events,
        namespace=namespace,
        batch_size=batch_size or None,
        processes=processes,
    )
    print(
        f"{broker}: of {r['seconds']:.2f}s, claiming {r['claiming_s']:.2f}s, encoding "
        f"{r['encoding_s']:.2f}s, publishing + confirms {r['publishing_s']:.2f}s",
        flush=True,
    )
    print(
        f"{broker}: {r['confirmed']}/{events} confirmed in {r['seconds']:.2f}s = "
        f"{r['rate']:,.0f} events/s ({r['batches']} batches of up to {r['batch_size']}, "
        f"{r['processes']} process{'es' if r['processes'] > 1 else ''}); "
        f"{r['cpu_us_per_event']:.0f} µs of this process's CPU per event",
        flush=True,
    )


# --- in `make bench` (bench/run.py) ------------------------------------------------------------


def broker_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=2).close()
    except OSError:
        return False
    return True


def externalisation_rate(bench, run: int) -> dict:
    """Scenario ``bus``: the externalisation rate on each broker, from a backlog of
    ``Sizes.backlog`` externalised events to every one confirmed (no process running: the
    relay's claim and the bus worker's batch run in this process, as above). A broker that is
    not reachable is reported as an error of its own and the other still measured."""
    bench.reset()
    figures, details, errors = {}, {}, {}
    for broker, url in BROKERS.items():
        url = os.environ.get(f"BENCH_{broker.upper()}_URL", url)
        if not broker_reachable(url):
            errors[broker] = f"{url} not reachable"
            figures[f"{broker}_rate"] = None
            continue
        r = externalise(url, events=bench.sizes.backlog, namespace=f"bench-{secrets.token_hex(3)}")
        figures[f"{broker}_rate"] = r["rate"]
        details[broker] = r
        bench.reset()
    if errors:
        details["errors"] = errors
    ok = not errors and all(d["checks_ok"] for d in details.values())
    return {"figures": figures, "details": details, "checks_ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--only", default="rabbitmq,nats")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--database-prefix",
        default="shop_bench_bus",
        help="name prefix of the scratch database (shop_bench_bus_<random>)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="EVENT_BUS BATCH_SIZE (default: settings)"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="processes draining the backlog side by side"
    )
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        broker, database_url, namespace, events = args.child
        child(
            broker,
            BROKERS[broker],
            int(events),
            database_url,
            namespace,
            args.batch_size,
            args.processes,
        )
        return 0
    for broker in args.only.split(","):
        name = f"{args.database_prefix}_{secrets.token_hex(3)}"
        database_url = f"{args.postgres_url}/{name}"
        env = {**os.environ, "DATABASE_URL": database_url}
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
        try:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
            )
            namespace = f"bench-{secrets.token_hex(3)}"
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    broker,
                    database_url,
                    namespace,
                    str(args.events),
                    "--batch-size",
                    str(args.batch_size),
                    "--processes",
                    str(args.processes),
                ],
                cwd=ROOT,
                env=env,
                check=True,
            )
        finally:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
