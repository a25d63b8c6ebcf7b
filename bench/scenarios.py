"""The six measurements. Each function is one run of one scenario and returns its figures.

Every run starts from an empty Redis database and empty shop tables, with real processes
started for it (relay, worker, beat, and web where HTTP is measured) and stopped after it.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import math
import time
from dataclasses import dataclass, fields, replace

from bench import bus_latency, bus_scenarios, saga_split
from bench.measure import (
    BenchError,
    CpuWindow,
    PgWindow,
    handler_latencies,
    latency_figures,
    ms,
    percentile,
    pss_kb,
    rss_kb,
    wait_for,
    wait_for_count,
)
from bench.saga import SAGA_SKUS, saga_measure, saga_service_runs, saga_setup
from bench.system import BENCH_QUEUE, Bench

NOOP_SUBSCRIBER = "bench.ping_noop"


@dataclass(frozen=True)
class Sizes:
    publish_tx: int = 2000  # transactions each way
    backlog: int = 20_000
    e2e: int = 5000  # per variant
    saga_service: int = 1000
    saga_paced_rate: float = 50.0
    saga_paced_seconds: float = 20.0
    saga_http: int = 300
    latency_rate: float = 100.0
    latency_seconds: float = 30.0
    idle_events: int = 50
    memory_events: int = 100_000
    warmup: int = 200

    # Smallest values a --size factor may bring each to (rates are never scaled).
    FLOORS = {
        "publish_tx": 50,
        "backlog": 200,
        "e2e": 100,
        "saga_service": 20,
        "saga_paced_seconds": 2.0,
        "saga_http": 10,
        "latency_seconds": 2.0,
        "idle_events": 5,
        "memory_events": 1000,
        "warmup": 20,
    }

    @classmethod
    def smoke(cls) -> Sizes:
        """Just enough of everything to prove the harness works (CI)."""
        return cls(
            publish_tx=50,
            backlog=200,
            e2e=50,
            saga_service=10,
            saga_paced_seconds=0.4,
            saga_http=5,
            latency_seconds=1.0,
            idle_events=3,
            memory_events=500,
            warmup=10,
        )

    def scaled(self, factor: float) -> Sizes:
        changes = {}
        for f in fields(self):
            if f.name not in self.FLOORS:
                continue
            value = getattr(self, f.name) * factor
            value = max(self.FLOORS[f.name], value)
            changes[f.name] = round(value) if isinstance(getattr(self, f.name), int) else value
        return replace(self, **changes)


# --- helpers ----------------------------------------------------------------------------------


def _max_delivery_id() -> int:
    from django.db.models import Max

    from outbox.models import Delivery

    return Delivery.objects.aggregate(m=Max("id"))["m"] or 0


def _noop_deliveries(after_id: int):
    from outbox.models import Delivery

    return Delivery.objects.filter(subscriber=NOOP_SUBSCRIBER, id__gt=after_id)


def _publish_pings(count: int, tag: str, *, per_tx: int = 1, first: int = 0) -> None:
    from django.db import transaction

    from bench.benchapp.events import Ping
    from outbox import publish_many

    for start in range(0, count, per_tx):
        with transaction.atomic():
            publish_many(
                [
                    Ping(ping_id=first + start + k, tag=tag)
                    for k in range(min(per_tx, count - start))
                ]
            )


def _warm_up(bench: Bench, *, plain: bool = False) -> None:
    """Every pool process has imported its code and opened its connections."""
    from bench.benchapp.tasks import noop

    n = bench.sizes.warmup
    _publish_pings(n, "warm-outbox")
    if plain:
        for i in range(n):
            noop.delay("warm-plain", i)
    wait_for(
        lambda: (
            len(bench.starts("warm-outbox")) >= n
            and (not plain or len(bench.starts("warm-plain")) >= n)
        ),
        timeout=120,
        what="warm-up",
        alive=bench.check_alive,
    )


def _delivery_checks(after_id: int, expected: int) -> dict:
    from django.db.models import Count, Max

    qs = _noop_deliveries(after_id)
    by_status = dict(qs.values_list("status").annotate(n=Count("id")))
    return {
        "deliveries": expected,
        "by_status": by_status,
        "max_attempts": qs.aggregate(m=Max("attempts"))["m"],
        "ok": by_status.get("done", 0) == expected and len(by_status) == 1,
    }


# --- 1. publish overhead ----------------------------------------------------------------------


@contextlib.contextmanager
def _in_process_settings(module_name: str | None):
    """With --ab, B's ``OUTBOX`` and database ``OPTIONS`` in this process (a new connection),
    for a scenario that measures the bench process itself (the publish overhead)."""
    if not module_name:
        yield
        return
    from django.conf import settings
    from django.db import connection

    experiment = importlib.import_module(module_name)
    saved = settings.OUTBOX, connection.settings_dict.get("OPTIONS", {})
    settings.OUTBOX = experiment.OUTBOX
    connection.close()
    connection.settings_dict["OPTIONS"] = experiment.DATABASES["default"].get("OPTIONS", {})
    try:
        yield
    finally:
        settings.OUTBOX, connection.settings_dict["OPTIONS"] = saved
        connection.close()


def publish_overhead(bench: Bench, run: int) -> dict:
    """The same transaction (create an order row) with and without publish() of one event,
    interleaved in blocks of 100 so that drift on a busy machine hits both alike. With --ab the
    B run applies B's OUTBOX and database OPTIONS in this process."""
    with _in_process_settings(bench.settings_module):
        return _publish_overhead(bench, run)


def _publish_overhead(bench: Bench, run: int) -> dict:
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import transaction

    from orders.events import OrderPlaced, PlacedLine
    from orders.models import Order
    from outbox import publish
    from outbox.registry import subscribers_for

    bench.reset()
    customer = get_user_model().objects.create_user(f"bench-publish-{run}")

    def order_only() -> None:
        with transaction.atomic():
            Order.objects.create(
                customer=customer,
                currency="EUR",
                total=Decimal("19.00"),
                request_fingerprint="0" * 64,
            )

    def order_and_event() -> None:
        with transaction.atomic():
            order = Order.objects.create(
                customer=customer,
                currency="EUR",
                total=Decimal("19.00"),
                request_fingerprint="0" * 64,
            )
            publish(
                OrderPlaced(
                    order_id=order.pk,
                    order_reference=order.reference,
                    customer_email="",
                    customer_id=customer.pk,
                    lines=(PlacedLine(sku="BENCH-00", quantity=1, unit_price="19.00"),),
                    total="19.00",
                    currency="EUR",
                    payment_token="tok_visa",
                ),
                correlation_id=order.correlation_id,
            )

    for _ in range(50):  # warm-up: connections, caches, the broker's producer pool
        order_only()
        order_and_event()
    times = {"without": [], "with": []}
    n = bench.sizes.publish_tx
    block = 100
    for start in range(0, n, block):
        for label, fn in (("without", order_only), ("with", order_and_event)):
            for _ in range(min(block, n - start)):
                t = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t)
    without = ms(sum(times["without"]) / len(times["without"]))
    with_ = ms(sum(times["with"]) / len(times["with"]))
    return {
        "figures": {
            "tx_without_ms": without,
            "tx_with_ms": with_,
            "overhead_ms": with_ - without,
            "ratio": with_ / without,
        },
        "details": {
            "transactions_each": n,
            "deliveries_per_event": len(subscribers_for("orders.OrderPlaced")),
            "p50_without_ms": ms(percentile(times["without"], 50)),
            "p50_with_ms": ms(percentile(times["with"], 50)),
            "p99_without_ms": ms(percentile(times["without"], 99)),
            "p99_with_ms": ms(percentile(times["with"], 99)),
        },
    }


# --- 2. relay dispatch ------------------------------------------------------------------------


def _messages_expected(n: int, batch: int, chunk: int) -> int:
    """Broker messages the relay sends for n deliveries to one queue (see deliveries_dispatch)."""
    total = 0
    while n > 0:
        claimed = min(batch, n)
        size = max(1, min(chunk, math.ceil(claimed / 4)))
        total += math.ceil(claimed / size)
        n -= claimed
    return total


def _queued_ids(r, queue: str) -> list[int]:
    ids: list[int] = []
    for raw in r.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        ids.extend(args[0])
    return ids


def relay_dispatch(bench: Bench, run: int) -> dict:
    """A backlog of pending deliveries, then the relay alone (no worker consumes): from the
    signal that wakes it to the moment the broker holds every delivery id."""
    from django.db import connection

    from outbox.conf import outbox_settings
    from outbox.models import Delivery
    from outbox.tasks import relay

    bench.reset()
    n = bench.sizes.backlog
    _publish_pings(n, f"backlog-{run}", per_tx=1000)
    with connection.cursor() as cursor:
        # What autovacuum does after this many inserts; the claim is planned on real stats.
        cursor.execute("ANALYZE outbox_delivery, outbox_event")
    # The publishers' wake-ups are dropped: the relay starts on our signal, not before.
    bench.redis_db.flush()
    conf = outbox_settings()
    expected_messages = _messages_expected(n, conf.RELAY_BATCH_SIZE, conf.DISPATCH_CHUNK_SIZE)
    with bench.system(relay=True, worker=False, beat=False):
        bench.profile_start(f"relay-{run}", ["relay"])
        done_at = None
        with CpuWindow(bench.alive()) as window, PgWindow() as pg:
            started = time.time()
            relay.apply_async(kwargs={"source": "bench"})
            # Beat's one-second tick, as in production: it resumes a drain that hit
            # RELAY_MAX_SECONDS.
            bench.supervisor.start("beat")
            deadline = time.monotonic() + 60 + n / 200
            last_db_check = 0.0
            while done_at is None:
                if bench.r.llen(BENCH_QUEUE) >= expected_messages:
                    done_at = time.time()
                elif time.monotonic() - last_db_check > 1.0:
                    last_db_check = time.monotonic()
                    if (
                        not Delivery.objects.filter(dispatched_at__isnull=True).exists()
                        and len(_queued_ids(bench.r, BENCH_QUEUE)) >= n
                    ):
                        done_at = time.time()
                if time.monotonic() > deadline:
                    raise BenchError(f"the relay did not dispatch {n} deliveries in time")
                bench.check_alive()
                time.sleep(0.005)
        bench.profile_stop()
    ids = _queued_ids(bench.r, BENCH_QUEUE)
    dispatched = set(ids)
    wanted = set(Delivery.objects.values_list("id", flat=True))
    return {
        "figures": {"rate": n / (done_at - started)},
        "details": {
            "backlog": n,
            "seconds": done_at - started,
            "messages": bench.r.llen(BENCH_QUEUE),
            "messages_expected": expected_messages,
            "ids_sent": len(ids),
            "duplicate_ids": len(ids) - len(dispatched),
            "missing_ids": len(wanted - dispatched),
            "relay_cpu_us_per_delivery": 1e6 * window.proc_cpu_s.get("relay", 0) / n,
            **pg.per_item(n),
            **window.describe(),
        },
        "checks_ok": dispatched == wanted and len(ids) == n,
    }


# --- 3. end to end, no-op ---------------------------------------------------------------------

E2E_VARIANTS = ("outbox", "delay", "delay_on_commit")
E2E_KINDS = {"outbox": "ping_tx", "delay": "delay", "delay_on_commit": "delay_on_commit"}


def end_to_end(bench: Bench, run: int) -> dict:
    """The same number of no-op handler runs three ways, on one worker and one broker:
    outbox (publish() per transaction -> relay -> deliver), plain .delay() per event, and
    delay_on_commit() in a transaction per event. Order rotated from run to run."""
    bench.reset()
    n = bench.sizes.e2e
    figures, details = {}, {}
    ok = True
    order = E2E_VARIANTS[run % 3 :] + E2E_VARIANTS[: run % 3]
    with bench.system(relay=True, worker=True, beat=True):
        _warm_up(bench, plain=True)
        for variant in order:
            tag = f"{variant}-{run}"
            after_id = _max_delivery_id()
            batch = bench.producers_run(E2E_KINDS[variant], total=n, n=bench.producers, tag=tag)
            bench.profile_start(f"e2e-{variant}-{run}", ["worker", "relay"])
            with CpuWindow(bench.alive()) as window, PgWindow() as pg:
                started = batch.go()
                if variant == "outbox":
                    wait_for_count(
                        lambda a=after_id: _noop_deliveries(a).filter(status="done").count(),
                        n,
                        what=f"{n} outbox deliveries done",
                        alive=bench.check_alive,
                    )
                else:
                    wait_for_count(
                        lambda t=tag: bench.r.hlen(f"bench:start:{t}"),
                        n,
                        what=f"{n} {variant} tasks run",
                        interval=0.05,
                        alive=bench.check_alive,
                    )
                results = batch.results(timeout=120)
            bench.profile_stop()
            if variant == "outbox":
                from django.db.models import Max

                last = _noop_deliveries(after_id).aggregate(m=Max("completed_at"))["m"]
                finished = last.timestamp()
                checks = _delivery_checks(after_id, n)
            else:
                finished = max(bench.starts(tag).values())
                checks = {"ok": True}
            runs = bench.runs(tag)
            checks["handler_runs"] = runs
            checks["ok"] = checks["ok"] and runs == n
            ok = ok and checks["ok"]
            seconds = finished - started
            sent = max(r["t_last"] for r in results) - started
            figures[f"{variant}_rate"] = n / seconds
            worker_cpu = window.proc_cpu_s.get("worker", 0.0)
            figures[f"{variant}_worker_cpu_ms"] = 1000 * worker_cpu / n
            details[variant] = {
                "seconds": seconds,
                "send_seconds": sent,
                "send_rate": n / sent if sent else None,
                "relay_cpu_ms_per_item": 1000 * window.proc_cpu_s.get("relay", 0.0) / n,
                **pg.per_item(n),
                "checks": checks,
                **window.describe(),
            }
    figures["ratio_delay"] = figures["outbox_rate"] / figures["delay_rate"]
    figures["ratio_on_commit"] = figures["outbox_rate"] / figures["delay_on_commit_rate"]
    details["order"] = list(order)
    details["items"] = n
    return {"figures": figures, "details": details, "checks_ok": ok}


# --- 4. the saga ------------------------------------------------------------------------------


def saga(bench: Bench, run: int) -> dict:
    """Orders through the service layer (a burst, then a steady 50/s) and through HTTP."""
    from django.db.models import Max

    from outbox.models import Delivery

    bench.reset()
    s = bench.sizes
    figures, details = {}, {}
    bench.counting = True  # statements and tasks per process (bench/benchapp/counting.py)
    with bench.system(relay=True, worker=True, beat=True, web=s.saga_http > 0):
        bench.counting = False
        customer_id, api_token = saga_setup(bench, run)
        _warm_up(bench)
        common = {"customer_id": customer_id, "skus": SAGA_SKUS, "count_sql": True}
        saga_service_runs(bench, run, common, figures, details)
        if s.saga_http:
            http, d = saga_measure(
                bench,
                "order_http",
                total=s.saga_http,
                n=bench.producers,
                tag=f"http-{run}",
                timeout=120 + s.saga_http / 5,
                url=f"http://127.0.0.1:{bench.web_port}",
                api_token=api_token,
                **common,
            )
            figures.update({f"http_{k}": v for k, v in http.items()})
            details["http_burst"] = d
        details["max_attempts"] = Delivery.objects.aggregate(m=Max("attempts"))["m"]
        details["dead"] = Delivery.objects.filter(status="dead").count()
    ok = details["dead"] == 0 and all(
        set(v["statuses"]) == {"completed"}
        for k, v in details.items()
        if isinstance(v, dict) and "statuses" in v
    )
    return {"figures": figures, "details": details, "checks_ok": ok}


# --- 5. commit-to-handler latency -------------------------------------------------------------


def commit_to_handler(bench: Bench, run: int) -> dict:
    """From the publishing transaction's commit to the handler's start: at a steady rate,
    then one event at a time on an idle system."""
    bench.reset()
    s = bench.sizes
    figures, details = {}, {}
    with bench.system(relay=True, worker=True, beat=True):
        _warm_up(bench)
        count = round(s.latency_rate * s.latency_seconds)
        tag = f"steady-{run}"
        batch = bench.producers_run(
            "ping_tx",
            total=count,
            n=1,
            tag=tag,
            rate=s.latency_rate,
            stamps_key=f"bench:commit:{tag}",
        )
        with CpuWindow(bench.alive()) as window, PgWindow() as pg:
            batch.go()
            (result,) = batch.results(timeout=60 + s.latency_seconds * 3)
            latencies = handler_latencies(bench, tag, count)
        figures.update(latency_figures("steady", latencies))
        details["steady"] = {
            "events": count,
            "rate_target": s.latency_rate,
            "rate_achieved": count / (result["t_last"] - result["t_first"]),
            "producer_lag_max_ms": ms(result["lag_max"]),
            "max_ms": max(latencies),
            **pg.per_item(count),
            **window.describe(),
        }
        time.sleep(2.0)
        tag = f"idle-{run}"
        batch = bench.producers_run(
            "ping_idle",
            total=s.idle_events,
            n=1,
            tag=tag,
            gap=0.25,
            stamps_key=f"bench:commit:{tag}",
        )
        batch.go()
        batch.results(timeout=60 + s.idle_events * 2)
        latencies = handler_latencies(bench, tag, s.idle_events)
        figures.update(latency_figures("idle", latencies))
        details["idle"] = {"events": s.idle_events, "max_ms": max(latencies)}
        checks = {"steady": bench.runs(f"steady-{run}") == count}
    return {"figures": figures, "details": details, "checks_ok": all(checks.values())}


# --- 6. memory --------------------------------------------------------------------------------


def _rss_sample(bench: Bench) -> dict:
    worker = bench.procs["worker"].tree()
    relay = bench.procs["relay"].tree()
    return {
        "t": time.time(),
        "worker_kb": sum(rss_kb(p) for p in worker),
        "worker_pss_kb": sum(pss_kb(p) or 0 for p in worker),
        "worker_each_kb": [rss_kb(p) for p in worker],
        "relay_kb": sum(rss_kb(p) for p in relay),
    }


def memory(bench: Bench, run: int) -> dict:
    """Worker (main process and pool) and relay RSS over a long run of no-op deliveries."""
    bench.reset()
    s = bench.sizes
    n = s.memory_events
    with bench.system(relay=True, worker=True, beat=True):
        _warm_up(bench)
        # A second warm-up at volume, so that the start figure is not a cold process's.
        after_warm = _max_delivery_id()
        _publish_pings(max(s.warmup, n // 50), "warm-volume", per_tx=10)
        wait_for(
            lambda: (
                _noop_deliveries(after_warm).filter(status="done").count() >= max(s.warmup, n // 50)
            ),
            timeout=120,
            what="volume warm-up",
            alive=bench.check_alive,
        )
        time.sleep(2.0)
        start = _rss_sample(bench)
        after_id = _max_delivery_id()
        samples = [start]
        batch = bench.producers_run(
            "ping_batch", total=n, n=bench.producers, tag=f"memory-{run}", batch=10
        )
        with CpuWindow(bench.alive()) as window, PgWindow() as pg:
            started = batch.go()
            next_sample = time.monotonic() + 1.0
            last, moved = -1, time.monotonic()
            while (done := _noop_deliveries(after_id).filter(status="done").count()) < n:
                if done != last:
                    last, moved = done, time.monotonic()
                elif time.monotonic() - moved > 90:
                    raise BenchError(f"memory run stuck at {done}/{n} deliveries for 90s")
                bench.check_alive()
                if time.monotonic() >= next_sample:
                    samples.append(_rss_sample(bench))
                    next_sample += 1.0
                time.sleep(0.25)
            finished = time.time()
            batch.results(timeout=120)
        time.sleep(2.0)
        end = _rss_sample(bench)
        samples.append(end)
        checks = _delivery_checks(after_id, n)
    figures = {
        "worker_start_mb": start["worker_kb"] / 1024,
        "worker_end_mb": end["worker_kb"] / 1024,
        "worker_growth_pct": 100.0 * (end["worker_kb"] / start["worker_kb"] - 1),
        "relay_start_mb": start["relay_kb"] / 1024,
        "relay_end_mb": end["relay_kb"] / 1024,
        "relay_growth_pct": 100.0 * (end["relay_kb"] / start["relay_kb"] - 1),
        "sustained_rate": n / (finished - started),
    }
    step = max(1, len(samples) // 60)
    details = {
        "events": n,
        "worker_peak_mb": max(x["worker_kb"] for x in samples) / 1024,
        "relay_peak_mb": max(x["relay_kb"] for x in samples) / 1024,
        "worker_pss_start_mb": start["worker_pss_kb"] / 1024,
        "worker_pss_end_mb": end["worker_pss_kb"] / 1024,
        "worker_each_kb": {"start": start["worker_each_kb"], "end": end["worker_each_kb"]},
        "samples": [
            {
                "t": round(x["t"] - started, 1),
                "worker_mb": round(x["worker_kb"] / 1024, 1),
                "relay_mb": round(x["relay_kb"] / 1024, 1),
            }
            for x in samples[::step]
        ],
        "checks": checks,
        **pg.per_item(n),
        **window.describe(),
    }
    return {"figures": figures, "details": details, "checks_ok": checks["ok"]}


SCENARIOS = {
    "publish": publish_overhead,
    "relay": relay_dispatch,
    "e2e": end_to_end,
    "saga": saga,
    "latency": commit_to_handler,
    "memory": memory,
    # The event bus's scenarios live in bench/bus_scenarios.py.
    "bus": bus_scenarios.externalisation_rate,
    # Commit on one service to the handler on another, across the bus (bench/bus_latency.py).
    "bus_latency": bus_latency.cross_database_latency,
    # The saga on the split deployment, beside the monolith's (bench/saga_split.py).
    "saga_split": saga_split.split_saga,
}
