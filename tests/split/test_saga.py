"""The saga is the same on the split deployment (issue 11, item 4): every process of
Procfile.split started for real (the shop, payments and notifications services, a PostgreSQL
database each, a Redis broker each, events between them over RabbitMQ or NATS JetStream), the REST
API driven over HTTP, and the orders end as they do in the monolith; the notifications service
emails the customer once per order event over real SMTP (an aiosmtpd server in this process).
Over either bus notifications joins late: released and started after the saga, it catches up
through the bus (``outbox_replay --to-service notifications`` on the shop service), addressed to
it alone: payments' consumer is sent nothing of it.

The brokers: a private redis-server of this test's own (the shop's tasks in DB 0, payments' in
DB 1, notifications' in DB 2), and a bus namespace of its own on the machine's RabbitMQ and NATS,
deleted afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlparse

import psycopg
import pytest

from harness.processes import Logs, Supervisor, venv_path
from harness.procfile import Procfile, release_run
from harness.services import RedisServer, free_port
from harness.smtp import SmtpInbox
from shop.services import SERVICES
from tests.bus.conftest import NATS_URL, RABBITMQ_URL, bus_received
from tests.split.conftest import ROOT, postgres_pass, split_env
from tests.support import require_service, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not postgres_pass(),
        reason="the split deployment's processes run in the PostgreSQL + Redis pass",
    ),
]
TERMINAL = {"completed", "cancelled"}
CUSTOMER = "demo@example.com"  # seed_demo's customer


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.token = None

    def call(self, method: str, path: str, body: dict | None = None, **headers) -> tuple:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Token {self.token}"} if self.token else {}),
                **headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def order(self, lines: list[dict], token: str) -> str:
        status, body = self.call(
            "POST",
            "/api/orders/",
            {"lines": lines, "payment_token": token},
            **{"Idempotency-Key": uuid.uuid4().hex},
        )
        assert status == 202, body
        return body["id"]

    def get(self, reference: str) -> dict:
        status, body = self.call("GET", f"/api/orders/{reference}/")
        assert status == 200, body
        return body


def manage(env: dict, *command: str) -> str:
    """``manage.py <command>`` in the shop service's shape; returns what it printed."""
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**env, "SHOP_SERVICE": "shop"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def release(env: dict, *options: str) -> None:
    assert "released:" in manage(env, "release", *options)


def rows(url: str, query: str) -> list[tuple]:
    parts = urlparse(url)
    with psycopg.connect(
        host=parts.hostname, port=parts.port, user=parts.username, dbname=parts.path[1:]
    ) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture
def smtp_inbox():
    """The mail server the notifications service sends to (EMAIL_URL=smtp://127.0.0.1:<port>)."""
    with SmtpInbox() as inbox:
        yield inbox


@pytest.fixture
def split_deployment(tmp_path, service_databases, smtp_inbox):
    """Start the split deployment on the bus given to ``start(bus_url)``; yields ``start``.

    ``start(bus_url, late="notifications")`` leaves that service out (its database not migrated,
    its queue not declared, its processes not started) until ``start.join()``."""
    started: dict = {}

    def start(bus_url: str, late: str | None = None) -> Api:
        namespace = f"test-split-{uuid.uuid4().hex[:8]}"
        (tmp_path / "redis").mkdir()
        redis = RedisServer(port=free_port(), log_folder=tmp_path / "redis")
        started["redis"] = redis
        redis.start()
        started["bus"] = (bus_url, namespace)
        port = free_port()
        env = split_env(
            tmp_path,
            service_databases,
            CELERY_BROKER_URL=redis.url,
            PAYMENTS_CELERY_BROKER_URL=redis.url.removesuffix("/0") + "/1",
            NOTIFICATIONS_CELERY_BROKER_URL=redis.url.removesuffix("/0") + "/2",
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_inbox.port}",
            EVENT_BUS_URL=bus_url,
            EVENT_BUS_NAMESPACE=namespace,
            PORT=str(port),
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            # Every process's metrics, for the test to read (tests.bus.conftest.bus_received).
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        )
        env["PATH"] = venv_path(env)
        started["env"] = env
        procfile = Procfile.read(ROOT / "Procfile.split")
        if late is None:
            release_run(procfile, env=env, cwd=ROOT, log=tmp_path / "release.log")
        else:
            release(env, *[f"--service={name}" for name in SERVICES if name != late])
        seeded = subprocess.run(
            [sys.executable, "manage.py", "seed_demo"],
            cwd=ROOT,
            env={**env, "SHOP_SERVICE": "shop"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert seeded.returncode == 0, seeded.stderr
        supervisor = Supervisor(
            procfile=procfile,
            env=env,
            cwd=ROOT,
            logs=Logs(tmp_path / "logs", combined=False),
            die_with_parent=True,
        )
        started["supervisor"] = supervisor
        started["late"] = (
            late,
            [p for p in procfile.processes if late and p.startswith(f"{late}-")],
        )
        processes = [
            supervisor.start(name) for name in procfile.processes if name not in started["late"][1]
        ]
        supervisor.wait_ready(supervisor.one("web"), timeout=120)
        for process in processes:
            process.check_alive()
        api = Api(port)
        status, body = api.call(
            "POST", "/api/auth/token/", {"username": "demo", "password": "demo-pass-123"}
        )
        assert status == 200, body
        api.token = body["token"]
        return api

    def join() -> None:
        """The late service arrives: its release step, then its processes."""
        late, names = started["late"]
        release(started["env"], f"--service={late}")
        for process in [started["supervisor"].start(name) for name in names]:
            process.check_alive()

    start.join = join
    start.manage = lambda *command: manage(started["env"], *command)
    yield start
    if "supervisor" in started:
        started["supervisor"].shutdown()
    if "redis" in started:
        started["redis"].stop()
    if "bus" in started:
        url, namespace = started["bus"]
        if url.startswith("nats"):
            from outbox.bus.adapters.nats import NatsAdapter as Adapter
        else:
            from outbox.bus.adapters.rabbitmq import RabbitMQAdapter as Adapter
        adapter = Adapter(url, namespace=namespace)
        adapter.topology_delete(services=list(SERVICES))
        adapter.close()


def saga_runs(api: Api, databases: dict[str, str], logs) -> list[str]:
    """The saga over HTTP; returns the emails the customer is owed, by subject."""
    # The demo catalogue reaches orders as events (inventory's ProductCatalogued), once the
    # shop's relay and worker run.
    wait_until(
        lambda: rows(databases["shop"], "SELECT count(*) FROM orders_catalogitem") >= [(5,)],
        timeout=240,
        what=f"the catalogue known to orders; logs in {logs}",
    )
    paid = api.order([{"sku": "MUG-CLASSIC", "quantity": 2}], "tok_visa")
    declined = api.order([{"sku": "TEE-LOGO", "quantity": 1}], "tok_chargeDeclined")
    short = api.order([{"sku": "LIMITED-PRINT", "quantity": 6}], "tok_visa")
    orders = [paid, declined, short]

    def terminal() -> bool:
        return all(api.get(reference)["status"] in TERMINAL for reference in orders)

    wait_until(terminal, timeout=240, what=f"every order terminal; logs in {logs}")
    got = {reference: api.get(reference) for reference in orders}
    assert got[paid]["status"] == "completed", got[paid]
    assert got[paid]["payment"] == {"status": "captured", "amount": "19.00"}
    assert got[paid]["shipment"]["status"] == "scheduled"
    assert (got[declined]["status"], got[declined]["cancellation_reason"]) == (
        "cancelled",
        "payment_failed",
    )
    assert got[declined]["payment"]["status"] == "failed"
    # Out of stock after the payment: refunded (compensated) across the services.
    assert (got[short]["status"], got[short]["cancellation_reason"]) == (
        "cancelled",
        "out_of_stock",
    )
    assert got[short]["payment"] == {"status": "refunded", "amount": "270.00"}

    # The customer cancels the completed order before it is handed to the carrier: the
    # shipment is cancelled in the shop, the payment refunded in the payments service.
    status, body = api.call("POST", f"/api/orders/{paid}/cancel/")
    assert status == 202, body
    wait_until(
        lambda: api.get(paid)["payment"]["status"] == "refunded",
        timeout=240,
        what=f"the cancelled order refunded; logs in {logs}",
    )
    assert api.get(paid)["cancellation_reason"] == "customer_cancelled"

    # Each order charged once, two refunds, all in the payments service's own database.
    payments = rows(databases["payments"], "SELECT status FROM payments_payment ORDER BY id")
    assert sorted(status for (status,) in payments) == ["failed", "refunded", "refunded"]
    assert rows(databases["payments"], "SELECT count(*) FROM payments_refund") == [(2,)]
    assert rows(
        databases["shop"],
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'payments%'",
    ) == [(0,)]
    return sorted(
        [f"We received your order {reference}" for reference in orders]
        + [f"Your order {paid} is on its way"]
        + [f"Your order {reference} is cancelled" for reference in orders]
    )


def emails_sent_once(expected: list[str], databases: dict[str, str], logs, inbox) -> None:
    """The notifications service: one email per order event, each naming its order, over SMTP,
    each recorded once in its own database."""
    wait_until(
        lambda: len(inbox.to(CUSTOMER)) >= len(expected),
        timeout=240,
        what=f"the customer's {len(expected)} emails; logs in {logs}",
    )
    messages = inbox.to(CUSTOMER)
    assert sorted(message["Subject"] for message in messages) == expected
    assert len({message["Message-ID"] for message in messages}) == len(expected)
    assert len(inbox.messages) == len(expected)  # nobody else was written to
    sent = rows(
        databases["notifications"],
        "SELECT message_id, recipient, status FROM notifications_notification",
    )
    assert sorted(sent) == sorted((m["Message-ID"], CUSTOMER, "sent") for m in messages)


ORDER_EVENTS = ("orders.OrderPlaced", "orders.OrderCompleted", "orders.OrderCancelled")
# The documented backfill (docs/operations.md), run on the shop service: to notifications alone.
REPLAY = (
    "outbox_replay",
    "--to-service",
    "notifications",
    *[option for event_type in ORDER_EVENTS for option in ("--type", event_type)],
    "--since",
    "2000-01-01",
)


@pytest.mark.parametrize(("bus_url", "broker"), [(RABBITMQ_URL, "RabbitMQ"), (NATS_URL, "NATS")])
def test_the_saga_and_notifications_joining_late(
    split_deployment, service_databases, tmp_path, smtp_inbox, bus_url, broker
):
    require_service(bus_url, broker)
    logs = tmp_path / "logs"
    api = split_deployment(bus_url, late="notifications")
    expected = saga_runs(api, service_databases, logs)
    assert smtp_inbox.messages == []  # nobody was there to send them

    # Notifications arrives: its release step and processes, then the backfill from the shop
    # service's event store, through the bus to notifications alone. Run twice: the second
    # finds the replay's deliveries done and sends nothing.
    split_deployment.join()
    outputs = []
    for _ in range(2):
        outputs.append(split_deployment.manage(*REPLAY))
        wait_until(
            lambda: (
                rows(
                    service_databases["shop"],
                    "SELECT count(*) FROM outbox_delivery WHERE subscriber LIKE 'bus%' "
                    "AND status <> 'done'",
                )
                == [(0,)]
            ),
            timeout=120,
            what=f"the replayed events published; logs in {logs}",
        )
    n = len(expected)  # one order event per email
    assert f"bus:notifications: {n} new deliveries (backfill), 0 made due again" in outputs[0]
    assert "bus:notifications: 0 new deliveries (backfill), 0 made due again, " in outputs[1]
    assert f"{n} already done and left alone" in outputs[1]
    # One order more behind the replayed events: once its emails are out, notifications' consumer
    # has taken in every replayed event before it (a queue delivers in order).
    last = api.order([{"sku": "MUG-CLASSIC", "quantity": 1}], "tok_visa")
    wait_until(
        lambda: api.get(last)["status"] in TERMINAL, timeout=240, what=f"{last}; logs in {logs}"
    )
    expected = sorted(
        [*expected, f"We received your order {last}", f"Your order {last} is on its way"]
    )
    emails_sent_once(expected, service_databases, logs, smtp_inbox)
    received = bus_received(tmp_path / "prometheus")
    # Payments was sent nothing of the replay: its consumer never saw an event twice.
    assert received.get(("payments", "duplicate"), 0) == 0, received
    assert rows(
        service_databases["payments"],
        "SELECT count(*), count(DISTINCT event_id) FROM outbox_event "
        "WHERE type = 'orders.OrderPlaced'",
    ) == [(4, 4)]
    # Notifications got the replay once (the second run sent nothing). RabbitMQ: its queue was
    # declared after the saga, so the replay is how the earlier events came. NATS: its durable
    # consumer starts at the stream's beginning (deliver_policy=all), so they came from the
    # stream first and the replay, on subjects of its own past JetStream's duplicate window,
    # was acknowledged as duplicates. Either way: each stored once, each email once.
    assert received[("notifications", "stored")] == n + 2, received
    assert received.get(("notifications", "duplicate"), 0) == (n if broker == "NATS" else 0)
    payments = rows(service_databases["payments"], "SELECT status FROM payments_payment")
    assert sorted(status for (status,) in payments) == [
        "captured",
        "failed",
        "refunded",
        "refunded",
    ]
