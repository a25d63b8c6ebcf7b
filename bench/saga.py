"""The saga's measurement, shared by the monolith's scenario (``saga``, bench/scenarios.py) and
the split deployment's (``saga_split``, bench/saga_split.py): the catalogue and a customer, orders
placed by producer processes until every one is terminal, place-to-terminal latency, and what
each order cost (CPU by process kind, statements, commits, messages).

``bench`` below is the bench (bench/system.py), or a side of it that runs other processes
(``ServiceSide``): anything with its producers, its Redis records, ``alive()``, ``check_alive()``,
``settle()`` and ``databases``.
"""

from __future__ import annotations

import math
import time

from bench.measure import (
    CpuWindow,
    PgBackendCpu,
    PgWindow,
    latency_figures,
    ms,
    wait_for,
    wait_for_count,
)
from bench.system import Bench

TERMINAL = ("completed", "cancelled")
TERMINAL_EVENTS = ("orders.OrderCompleted", "orders.OrderCancelled")
SAGA_SKUS = [f"BENCH-{i:02d}" for i in range(20)]


def saga_setup(bench: Bench, run: int) -> tuple[int, str]:
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from inventory.models import STOCK_MAX
    from inventory.services import product_create
    from orders.models import CatalogItem

    for i, sku in enumerate(SAGA_SKUS):
        product_create(sku=sku, name=f"Bench {i}", price=Decimal("10.00") + i, stock=STOCK_MAX)
    wait_for(
        lambda: CatalogItem.objects.count() == len(SAGA_SKUS),
        timeout=60,
        what="orders' catalogue",
        alive=bench.check_alive,
    )
    customer = get_user_model().objects.create_user(f"bench-saga-{run}")
    _instance, token = AuthToken.objects.create(user=customer)
    return customer.pk, token


def saga_measure(
    bench: Bench, kind: str, *, total: int, n: int, tag: str, timeout: float, **spec
) -> tuple[dict, dict]:
    from django.db.models import Count

    from orders.models import Order
    from outbox.models import Event

    key = f"bench:placed:{tag}"
    batch = bench.producers_run(kind, total=total, n=n, tag=tag, stamps_key=key, **spec)
    costs = SagaCosts(bench)
    costs.__enter__()
    with CpuWindow(bench.alive()) as window, PgWindow(bench.databases) as pg:
        started = batch.go()
        costs.producers = batch.results(timeout=timeout)
        placed = bench.stamps(key)
        references = [k for k in placed if isinstance(k, str)]
        if references:  # placed over HTTP: the API answers the order's reference
            by_reference = dict(
                Order.objects.filter(reference__in=references).values_list("reference", "pk")
            )
            placed = {by_reference.get(k, k): v for k, v in placed.items()}
        ids = list(placed)
        wait_for_count(
            lambda: Order.objects.filter(pk__in=ids, status__in=TERMINAL).count(),
            len(ids),
            what=f"orders ({tag}) reaching completed or cancelled",
            alive=bench.check_alive,
        )
    terminal: dict[int, float] = {}
    rows = Event.objects.filter(
        type__in=TERMINAL_EVENTS, aggregate_type="order", aggregate_id__in=[str(i) for i in ids]
    ).values_list("aggregate_id", "occurred_at")
    for aggregate_id, occurred_at in rows:
        order_id = int(aggregate_id)
        terminal[order_id] = min(terminal.get(order_id, math.inf), occurred_at.timestamp())
    latencies = [ms(terminal[i] - placed[i]) for i in ids]
    statuses = dict(Order.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("id")))
    seconds = max(terminal.values()) - started
    figures = {"rate": len(ids) / seconds, **latency_figures("lat", latencies)}
    details = {
        "orders": len(ids),
        "seconds": seconds,
        "statuses": statuses,
        "latency_max_ms": max(latencies),
        **pg.per_item(len(ids)),
        **window.describe(),
    }
    bench.settle(timeout)
    costs.__exit__(None, None, None)
    cost = costs.per_order(len(ids))
    figures.update(cost["figures"])
    details["costs"] = cost["details"]
    return figures, details


class SagaCosts:
    """What the orders of one saga measurement cost, per order, from the release of the
    producers until every delivery is done (so the steps after the terminal event count too):
    CPU by process kind (producers or web, relay, worker, beat, PostgreSQL backends), SQL
    statements by process kind (bench/benchapp/counting.py), PostgreSQL commits, and Celery
    task messages run (each a broker message: the relay's wake-ups and ticks, the deliveries).
    """

    def __init__(self, bench: Bench):
        self.bench = bench
        self.producers: list[dict] = []

    def __enter__(self) -> SagaCosts:
        from bench.benchapp.counting import read

        self.counts_start = read(self.bench.r)
        self.cpu = CpuWindow(self.bench.alive()).__enter__()
        self.pg = PgWindow(self.bench.databases).__enter__()
        self.pg_cpu = PgBackendCpu(databases=self.bench.databases).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        from bench.benchapp.counting import read

        self.pg_cpu.__exit__(*exc)
        self.cpu.__exit__(*exc)
        self.pg.__exit__(*exc)
        # Counts are added after each task: the last one's a moment after it is marked done.
        time.sleep(0.5)
        end = read(self.bench.r)
        self.counts = {k: v - self.counts_start.get(k, 0) for k, v in end.items()}

    def per_order(self, orders: int) -> dict:
        cpu_s = dict(self.cpu.proc_cpu_s)
        cpu_s["producer"] = sum(r.get("cpu_s", 0.0) for r in self.producers)
        cpu_s["postgres"] = self.pg_cpu.cpu_s
        cpu_ms = {k: 1000 * v / orders for k, v in cpu_s.items()}
        cpu_ms["total"] = sum(cpu_ms.values())
        sql = {k.split(":")[0]: v for k, v in self.counts.items() if k.endswith(":sql")}
        sql["producer"] = sum(r.get("sql", 0) for r in self.producers)
        tasks = {k.split(":")[0]: v for k, v in self.counts.items() if k.endswith(":tasks")}
        pg = self.pg.per_item(orders)
        figures = {f"cpu_{k}_ms": v for k, v in cpu_ms.items()}
        figures["sql_per_order"] = sum(sql.values()) / orders
        figures["commits_per_order"] = pg["pg_commits_per_item"]
        figures["messages_per_order"] = sum(tasks.values()) / orders
        return {
            "figures": figures,
            "details": {
                "cpu_seconds": cpu_s,
                "sql_per_order": {k: v / orders for k, v in sql.items()},
                "tasks_per_order": {k: v / orders for k, v in tasks.items()},
                "postgres_backends_seen": self.pg_cpu.backends,
                **pg,
                **self.cpu.describe(),
            },
        }


def saga_service_runs(bench: Bench, run: int, common: dict, figures: dict, details: dict) -> None:
    """Orders through the service layer, a burst then a steady ``saga_paced_rate``: their
    figures and details added to ``figures`` and ``details``. ``bench`` is the bench, or a side
    of it running other processes (the split deployment, bench/saga_split.py)."""
    s = bench.sizes
    burst, d = saga_measure(
        bench,
        "order_service",
        total=s.saga_service,
        n=bench.producers,
        tag=f"service-{run}",
        timeout=120 + s.saga_service / 5,
        **common,
    )
    figures.update({f"service_{k}": v for k, v in burst.items()})
    details["service_burst"] = d
    paced_total = round(s.saga_paced_rate * s.saga_paced_seconds)
    paced, d = saga_measure(
        bench,
        "order_service",
        total=paced_total,
        n=1,
        tag=f"paced-{run}",
        timeout=120 + s.saga_paced_seconds * 2,
        rate=s.saga_paced_rate,
        **common,
    )
    figures.update({f"paced_{k}": v for k, v in paced.items() if k != "rate"})
    details["service_paced"] = {**d, "rate_target": s.saga_paced_rate}
