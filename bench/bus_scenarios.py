"""Bus benchmark: externalisation rate, from a backlog in the outbox to confirmed by the broker.

    .venv/bin/python bench/bus_scenarios.py                       # both brokers, 20,000 events
    .venv/bin/python bench/bus_scenarios.py --events 5000 --only nats

For each broker: a database of its own on PostgreSQL (created, migrated, dropped), a namespace
of its own on the broker (deleted afterwards). It publishes a backlog of ``OrderCancelled``
events (externalised, no local subscriber: only bus deliveries), then times the loop the relay
and the ``bus`` queue's worker run between them (claim a batch of due deliveries, publish it,
wait for every confirm, mark the batch done) until nothing is due, in one process: the Celery
hop between the two is left out, so this is the rate of the bus path itself. Nothing is bound
to the events, so every message lands in the alternate exchange's quorum queue (RabbitMQ) or
the file-backed stream (NATS): the broker's durable write is in the figure.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKERS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "nats": "nats://127.0.0.1:4222",
}


def child(broker: str, url: str, events: int, database_url: str, namespace: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url,
        EVENT_BUS_URL=url,
        EVENT_BUS_NAMESPACE=namespace,
        DJANGO_SETTINGS_MODULE="shop.settings",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import transaction

    from orders.events import OrderCancelled
    from outbox import publish_many
    from outbox.bus.publishing import bus_adapter, bus_deliveries_publish
    from outbox.models import Delivery
    from outbox.relay import deliveries_claim

    for start in range(0, events, 1000):
        with transaction.atomic():
            publish_many(
                OrderCancelled(
                    order_id=n, order_reference="", customer_email="", reason="payment_failed"
                )
                for n in range(start, min(events, start + 1000))
            )
    adapter = bus_adapter()
    adapter.topology_declare(service=None, event_types=())
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
    started = time.perf_counter()
    batches = 0
    claiming = 0.0
    while True:
        t = time.perf_counter()
        claimed = deliveries_claim(limit=500)
        claiming += time.perf_counter() - t
        if not claimed:
            break
        bus_deliveries_publish(delivery_ids=[pk for pk, _ in claimed])
        batches += 1
    seconds = time.perf_counter() - started
    print(
        f"{broker}: of {seconds:.2f}s, claiming {claiming:.2f}s, encoding "
        f"{spent['encode']:.2f}s, publishing + confirms {spent['publish_batch']:.2f}s",
        flush=True,
    )
    done = Delivery.objects.filter(subscriber="bus", status="done").count()
    print(
        f"{broker}: {done}/{events} confirmed in {seconds:.2f}s = {done / seconds:,.0f} events/s "
        f"({batches} batches)",
        flush=True,
    )
    bus_adapter().topology_delete(services=[])
    bus_adapter().close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--only", default="rabbitmq,nats")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        broker, database_url, namespace, events = args.child
        child(broker, BROKERS[broker], int(events), database_url, namespace)
        return 0
    for broker in args.only.split(","):
        name = f"shop_bench_bus_{secrets.token_hex(3)}"
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
