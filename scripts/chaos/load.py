"""Customers placing orders over HTTP, paced over the load window, retried until acknowledged.

Every request carries an ``Idempotency-Key``, and a request that got no answer (the web process
was killed, the connection reset, a 5xx) is sent again with the same key: the retry returns the
order the first attempt created, if it did. An order counts as placed when a 2xx answer with
its id arrives, once per key.

A share of the orders is cancelled by their customer (``POST /api/orders/<id>/cancel/``) a
planned 0 to 2 seconds after the place call's 202: before the payment, mid-saga or after the
order completed. The answers the API documents are 202 (accepted, or the order already ended
cancelled) and 409 (the parcel is with the carrier); a cancel without an answer is sent again,
as the cancel is idempotent. Each cancel's last answer is kept (``CancelAnswer``).
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
CANCEL_WITHIN = 2.0  # seconds after the place call's 202, at most (by default)
# The cancel's answers docs/api.md and the OpenAPI schema document for the owner of the order:
# 202 (accepted, or already cancelled: a no-op) and 409 (the parcel is with the carrier).
CANCEL_ACCEPTED, CANCEL_REFUSED = 202, 409


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
    cancel_after: float | None = None  # seconds after the 202 to cancel it; None: never

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


@dataclass(frozen=True)
class CancelAnswer:
    """The customer's cancel of an acknowledged order: its last answer (None: none came)."""

    order_id: str  # the order's reference, as for Ack (the checks map it to the primary key)
    status: int | None
    attempts: int
    body: object = None


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
    cancel_share: float = 0.0,
    cancel_within: float = CANCEL_WITHIN,
) -> list[OrderRequest]:
    """``count`` orders of 1 to 3 distinct products, 1 to 3 units each, some cards declined,
    some cancelled 0 to ``cancel_within`` seconds after they were acknowledged."""
    plan = []
    for number in range(count):
        chosen = sorted(rng.sample(skus, rng.choice((1, 1, 2, 2, 3))))
        lines = tuple((sku, rng.randint(1, 3)) for sku in chosen)
        token = DECLINED_TOKEN if rng.random() < decline_share else CAPTURED_TOKEN
        cancel_after = rng.uniform(0, cancel_within) if rng.random() < cancel_share else None
        plan.append(
            OrderRequest(
                number=number,
                key=f"chaos-{run_id}-{number}",
                customer=rng.choice(customers),
                lines=lines,
                payment_token=token,
                cancel_after=cancel_after,
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
        self.cancels: dict[int, CancelAnswer] = {}  # by request number, once sent
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
        answer = self._send(
            "POST",
            "/api/orders/",
            token=request.customer.token,
            body=request.body(),
            headers={"Idempotency-Key": request.key},
        )
        if answer is None:
            with self._lock:
                self.stats.gave_up.append(request.number)
            return
        status, body, attempts = answer
        order_id = body.get("id") if isinstance(body, dict) else None
        with self._lock:
            if not 200 <= status < 300:
                self.stats.rejected.append(f"{request.key}: {status} {body}")
                return
            if not isinstance(order_id, str):
                self.stats.rejected.append(f"{request.key}: {status} without id")
                return
            self.acks[request.number] = Ack(request=request, order_id=order_id, attempts=attempts)
            if attempts > 1:
                self.stats.acknowledged_after_retry += 1
        if request.cancel_after is not None:
            self._cancel(request, order_id)

    def _cancel(self, request: OrderRequest, order_id: str) -> None:
        """The customer cancels the order ``request.cancel_after`` seconds after its 202."""
        if self.stop.wait(request.cancel_after):
            return
        with self._lock:
            self.cancels[request.number] = CancelAnswer(order_id=order_id, status=None, attempts=0)
        answer = self._send("POST", f"/api/orders/{order_id}/cancel/", token=request.customer.token)
        status, body, attempts = answer if answer else (None, None, 0)
        with self._lock:
            self.cancels[request.number] = CancelAnswer(
                order_id=order_id, status=status, attempts=attempts, body=body
            )

    def _send(self, method: str, path: str, **kwargs) -> tuple[int, object, int] | None:
        """(status, body, attempts) of the first answer that is neither a 5xx nor a 429; the
        request is sent again (backing off) while there is none. None: given up (stopped, or
        ``give_up_after`` seconds without one)."""
        delay = RETRY_FIRST_DELAY
        attempts = 0
        give_up_at = time.monotonic() + self.give_up_after
        while True:
            if self.stop.is_set() or time.monotonic() > give_up_at:
                return None
            attempts += 1
            with self._lock:
                self.stats.requests += 1
            sent_at = time.monotonic()
            try:
                status, body = self.http.request(method, path, **kwargs)
            except TimeoutError:
                with self._lock:
                    self.stats.timeouts.append(sent_at)
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.stats.connection_errors += 1
            else:
                with self._lock:
                    self.stats.statuses[status] += 1
                if status < 500 and status != 429:
                    return status, body, attempts
                with self._lock:
                    self.stats.server_errors += 1
            self.stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(RETRY_MAX_DELAY, delay * 2)
