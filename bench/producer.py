"""A load producer: one process that publishes events, sends tasks or places orders.

Started by the harness as ``python -m bench.producer '<json spec>'`` with the bench's
environment. It sets Django up, says it is ready, waits for the go signal (so that several
producers start together and their start-up is not timed), does its work, and reports.
Per-item timestamps (commit times, placing times) are kept in memory and written to Redis
after the timed part.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback


def main(spec: dict) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    django.setup()
    import redis

    r = redis.Redis.from_url(
        os.environ["BENCH_RECORD_REDIS_URL"], decode_responses=True, socket_timeout=None
    )
    token = spec["token"]
    r.rpush(f"bench:ready:{token}", spec["index"])
    if r.blpop([f"bench:go:{token}"], timeout=spec.get("go_timeout", 120)) is None:
        raise SystemExit("producer: no go signal")
    result = {"index": spec["index"], "count": 0, "errors": [], "error_count": 0}
    stamps: dict[str, str] = {}
    if spec.get("count_sql"):
        from bench.benchapp import counting

        counting.install(flush=False)
    cpu_start = time.process_time()
    try:
        KINDS[spec["kind"]](spec, result, stamps, r)
    except Exception:
        result["errors"].append(traceback.format_exc()[-2000:])
        result["error_count"] += 1
    finally:
        # This process's CPU for its work (it exits before the bench reads anyone's CPU).
        result["cpu_s"] = time.process_time() - cpu_start
        if spec.get("count_sql"):
            result["sql"] = counting.counts()["sql"]
        if stamps and spec.get("stamps_key"):
            items = list(stamps.items())
            for start in range(0, len(items), 5000):
                r.hset(spec["stamps_key"], mapping=dict(items[start : start + 5000]))
        r.rpush(f"bench:result:{token}", json.dumps(result))


class Pacer:
    """Items at ``rate`` per second on an absolute schedule; never bunches up to catch up
    faster than the schedule allows, and records how far behind it ever fell."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.start = time.time()
        self.lag_max = 0.0

    def wait(self, i: int) -> None:
        if not self.rate:
            return
        due = self.start + i / self.rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        else:
            self.lag_max = max(self.lag_max, now - due)


def _error(result: dict, exc: BaseException) -> None:
    result["error_count"] += 1
    if len(result["errors"]) < 5:
        result["errors"].append(f"{type(exc).__name__}: {exc}")


def ping_tx(spec, result, stamps, r) -> None:
    """One Ping per transaction, as a web request would publish it. With a rate, the commit
    time of each is taken by an on-commit callback registered before publish()'s own (the
    relay wake-up), i.e. right after COMMIT returned."""
    from django.db import transaction

    from bench.benchapp.events import Ping, RemotePing
    from outbox import publish

    # "remote": the externalised RemotePing, handled by another service (bench/bus_latency.py).
    event = RemotePing if spec.get("event") == "remote" else Ping
    tag, first = spec["tag"], spec["seq_start"]
    pacer = Pacer(spec.get("rate"))
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        pacer.wait(i)
        seq = first + i
        with transaction.atomic():
            transaction.on_commit(lambda s=seq: stamps.__setitem__(str(s), repr(time.time())))
            publish(event(ping_id=seq, tag=tag))
        result["count"] += 1
    result["t_last"] = time.time()
    result["lag_max"] = pacer.lag_max


def ping_batch(spec, result, stamps, r) -> None:
    """``batch`` Pings per transaction (publish_many): load for long runs."""
    from django.db import transaction

    from bench.benchapp.events import Ping
    from outbox import publish_many

    tag, first, batch = spec["tag"], spec["seq_start"], spec.get("batch", 10)
    result["t_first"] = time.time()
    for start in range(0, spec["count"], batch):
        n = min(batch, spec["count"] - start)
        with transaction.atomic():
            publish_many([Ping(ping_id=first + start + k, tag=tag) for k in range(n)])
        result["count"] += n
    result["t_last"] = time.time()


def ping_idle(spec, result, stamps, r) -> None:
    """One Ping at a time on an idle system: publish, wait until its handler started, rest."""
    from django.db import transaction

    from bench.benchapp.events import Ping, RemotePing
    from outbox import publish

    event = RemotePing if spec.get("event") == "remote" else Ping
    tag, first = spec["tag"], spec["seq_start"]
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        seq = first + i
        with transaction.atomic():
            transaction.on_commit(lambda s=seq: stamps.__setitem__(str(s), repr(time.time())))
            publish(event(ping_id=seq, tag=tag))
        result["count"] += 1
        deadline = time.time() + 30
        while not r.hexists(f"bench:start:{tag}", str(seq)) and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(spec.get("gap", 0.25))
    result["t_last"] = time.time()


def task_delay(spec, result, stamps, r) -> None:
    from bench.benchapp.tasks import noop

    tag, first = spec["tag"], spec["seq_start"]
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        noop.delay(tag, first + i)
        result["count"] += 1
    result["t_last"] = time.time()


def task_delay_on_commit(spec, result, stamps, r) -> None:
    from django.db import transaction

    from bench.benchapp.tasks import noop

    tag, first = spec["tag"], spec["seq_start"]
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        with transaction.atomic():
            noop.delay_on_commit(tag, first + i)
        result["count"] += 1
    result["t_last"] = time.time()


def _order_lines(rng: random.Random, skus: list[str]) -> list[dict]:
    return [{"sku": sku, "quantity": 1} for sku in rng.sample(skus, rng.choice((1, 2)))]


def order_service(spec, result, stamps, r) -> None:
    """Orders through the service layer (orders.services.order_place), as the API calls it."""
    from django.contrib.auth import get_user_model

    from orders.services import order_place

    customer = get_user_model().objects.get(pk=spec["customer_id"])
    rng = random.Random(spec["index"])
    pacer = Pacer(spec.get("rate"))
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        pacer.wait(i)
        lines = _order_lines(rng, spec["skus"])
        try:
            order, _ = order_place(customer=customer, lines=lines, payment_token="tok_visa")
        except Exception as exc:
            _error(result, exc)
            continue
        stamps[str(order.pk)] = repr(time.time())
        result["count"] += 1
    result["t_last"] = time.time()
    result["lag_max"] = pacer.lag_max


def order_http(spec, result, stamps, r) -> None:
    """Orders through POST /api/orders/ on the web process (gunicorn), one client session."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Token {spec['api_token']}"
    url = f"{spec['url']}/api/orders/"
    rng = random.Random(1000 + spec["index"])
    pacer = Pacer(spec.get("rate"))
    result["t_first"] = time.time()
    for i in range(spec["count"]):
        pacer.wait(i)
        body = {"lines": _order_lines(rng, spec["skus"]), "payment_token": "tok_visa"}
        try:
            response = session.post(url, json=body, timeout=30)
            if response.status_code != 202:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        except Exception as exc:
            _error(result, exc)
            continue
        stamps[str(response.json()["id"])] = repr(time.time())
        result["count"] += 1
    result["t_last"] = time.time()
    result["lag_max"] = pacer.lag_max


KINDS = {
    "ping_tx": ping_tx,
    "ping_batch": ping_batch,
    "ping_idle": ping_idle,
    "delay": task_delay,
    "delay_on_commit": task_delay_on_commit,
    "order_service": order_service,
    "order_http": order_http,
}


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
