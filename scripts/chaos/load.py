"""Customers placing orders over HTTP, paced over the load window, retried until acknowledged.

Every request carries an ``Idempotency-Key``, and a request that got no answer (the web process
was killed, the connection reset, a 5xx) is sent again with the same key: the retry returns the
order the first attempt created, if it did. An order counts as placed when a 2xx answer with
its id arrives, once per key.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from chaos.clock import say

DECLINED_TOKEN = "tok_chargeDeclined"
CAPTURED_TOKEN = "tok_visa"
RETRY_FIRST_DELAY = 0.2
RETRY_MAX_DELAY = 2.0


@dataclass(frozen=True)
class Customer:
    user_id: int
    username: str
    token: str


@dataclass(frozen=True)
class OrderRequest:
    number: int
    key: str
    customer: Customer
    lines: tuple[tuple[str, int], ...]
    payment_token: str

    def body(self) -> dict:
        return {
            "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in self.lines],
            "payment_token": self.payment_token,
        }


@dataclass(frozen=True)
class Ack:
    request: OrderRequest
    order_id: str  # the order's public id, its reference, as the API answered it
    attempts: int


def catalogue_plan(orders: int) -> dict[str, tuple[str, int]]:
    """sku -> (price, initial stock): three that never run out, three that do."""
    plenty = orders * 3
    scarce = max(5, orders * 3 // 10)  # about half of the paid demand for it
    return {
        "CHAOS-MUG": ("9.50", plenty),
        "CHAOS-TEE": ("20.00", plenty),
        "CHAOS-PEN": ("2.25", plenty),
        "CHAOS-POSTER": ("12.00", scarce),
        "CHAOS-VINYL": ("30.00", scarce),
        "CHAOS-LAST": ("99.00", 3),
    }


def requests_plan(
    *,
    count: int,
    customers: list[Customer],
    skus: list[str],
    decline_share: float,
    rng: random.Random,
    run_id: str,
) -> list[OrderRequest]:
    """``count`` orders of 1 to 3 distinct products, 1 to 3 units each, some cards declined."""
    plan = []
    for number in range(count):
        chosen = sorted(rng.sample(skus, rng.choice((1, 1, 2, 2, 3))))
        plan.append(
            OrderRequest(
                number=number,
                key=f"chaos-{run_id}-{number}",
                customer=rng.choice(customers),
                lines=tuple((sku, rng.randint(1, 3)) for sku in chosen),
                payment_token=DECLINED_TOKEN if rng.random() < decline_share else CAPTURED_TOKEN,
            )
        )
    return plan


class Http:
    """One request per connection (gunicorn's sync workers close them anyway)."""

    def __init__(self, port: int, timeout: float = 20):
        self.port = port
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict | None = None,
        headers: dict | None = None,
    ) -> tuple[int, object]:
        """(status, decoded JSON or the raw text); raises OSError/HTTPException without one."""
        all_headers = {"Accept": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Token {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")[:500]


@dataclass
class LoadStats:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)  # every HTTP answer, by status
    connection_errors: int = 0  # refused, reset, closed without an answer
    # When (time.monotonic()) each request was sent that got no answer within the client's
    # timeout: a request that hung.
    timeouts: list[float] = field(default_factory=list)
    server_errors: int = 0
    acknowledged_after_retry: int = 0
    rejected: list[str] = field(default_factory=list)  # 4xx or a 2xx without an id
    gave_up: list[int] = field(default_factory=list)  # request numbers never acknowledged
    held_seconds: float = 0.0  # client time spent waiting for in-flight orders to finish
    finished_at: float | None = None


class Load:
    """Sends ``plan`` paced over ``seconds`` from ``threads`` threads; collects the answers.

    With ``max_in_flight``, a client also waits while that many acknowledged orders have not
    ended yet (``ended()`` counts the orders that did): the load then follows what the system
    can do instead of piling up a backlog. A request that gets no 2xx for ``give_up_after``
    seconds of retries is given up.
    """

    def __init__(
        self,
        *,
        http: Http,
        plan: list[OrderRequest],
        seconds: float,
        threads: int,
        stop: threading.Event,
        max_in_flight: int = 0,
        ended: Callable[[], int] = lambda: 0,
        give_up_after: float = 180.0,
    ):
        self.http = http
        self.plan = plan
        self.seconds = seconds
        self.threads = threads
        self.stop = stop
        self.max_in_flight = max_in_flight
        self.ended = ended
        self.give_up_after = give_up_after
        self.acks: dict[int, Ack] = {}
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._next = 0
        self._started = 0.0

    def progress(self) -> float:
        """The share of the plan's requests sent so far (0..1)."""
        return self._next / len(self.plan)

    def run(self) -> None:
        self._started = time.monotonic()
        workers = [
            threading.Thread(target=self._work, name=f"client-{n}", daemon=True)
            for n in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        progress_every = max(1, len(self.plan) // 10)
        reported = 0
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(0.5)
            with self._lock:
                done = len(self.acks) + len(self.stats.rejected) + len(self.stats.gave_up)
            if done - reported >= progress_every:
                reported = done
                say(
                    f"load: {done}/{len(self.plan)} requests answered, "
                    f"{len(self.acks) - self.ended()} orders in flight"
                )
        self.stats.finished_at = time.monotonic()

    def _take(self) -> OrderRequest | None:
        with self._lock:
            if self._next >= len(self.plan):
                return None
            request = self.plan[self._next]
            self._next += 1
            return request

    def _work(self) -> None:
        while (request := self._take()) is not None:
            due = self._started + self.seconds * request.number / len(self.plan)
            delay = due - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            if self.max_in_flight:
                held = time.monotonic()
                while len(self.acks) - self.ended() >= self.max_in_flight:
                    if self.stop.wait(0.1):
                        return
                with self._lock:
                    self.stats.held_seconds += time.monotonic() - held
            self._place(request)

    def _place(self, request: OrderRequest) -> None:
        delay = RETRY_FIRST_DELAY
        attempts = 0
        give_up_at = time.monotonic() + self.give_up_after
        while True:
            if self.stop.is_set() or time.monotonic() > give_up_at:
                with self._lock:
                    self.stats.gave_up.append(request.number)
                return
            attempts += 1
            with self._lock:
                self.stats.requests += 1
            sent_at = time.monotonic()
            try:
                status, body = self.http.request(
                    "POST",
                    "/api/orders/",
                    token=request.customer.token,
                    body=request.body(),
                    headers={"Idempotency-Key": request.key},
                )
            except TimeoutError:
                with self._lock:
                    self.stats.timeouts.append(sent_at)
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.stats.connection_errors += 1
            else:
                with self._lock:
                    self.stats.statuses[status] += 1
                if 200 <= status < 300:
                    order_id = body.get("id") if isinstance(body, dict) else None
                    with self._lock:
                        if isinstance(order_id, str):
                            self.acks[request.number] = Ack(
                                request=request, order_id=order_id, attempts=attempts
                            )
                            if attempts > 1:
                                self.stats.acknowledged_after_retry += 1
                        else:
                            self.stats.rejected.append(f"{request.key}: {status} without id")
                    return
                if status < 500 and status != 429:
                    with self._lock:
                        self.stats.rejected.append(f"{request.key}: {status} {body}")
                    return
                with self._lock:
                    self.stats.server_errors += 1
            self.stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_MAX_DELAY, delay * 2)
