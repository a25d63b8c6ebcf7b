"""The short split chaos run (issue 11, item 8): every process of Procfile.split (the shop,
payments and notifications services, a database each on a private PostgreSQL cluster, events
over a private RabbitMQ node, mail to an SMTP server in the run), a few dozen orders over HTTP,
each split fault once (the payments service's consumer and worker killed, RabbitMQ restarted,
the shop's relay killed), and every invariant checked afterwards, with one email per order
event.

Runs in the PostgreSQL + Redis pass (skipped on SQLite); where rabbitmq-server, redis-server or
PostgreSQL's server binaries are not installed it is skipped, or fails when CI is set. The
bigger run is `make chaos ARGS="--split --orders 300"` (docs/chaos.md).
"""

from __future__ import annotations

from harness.services import rabbitmq_server_binary
from tests.chaos.conftest import CHAOS_TEST, assert_clean, chaos_run, require_servers

FAULTS = {"kill-payments", "restart-rabbitmq", "kill-relay-beat"}
ORDERS = 24

pytestmark = CHAOS_TEST


def test_short_split_chaos_run_loses_nothing_and_emails_each_order_event_once(
    tmp_path, monkeypatch
):
    require_servers(rabbitmq_server_binary)
    monkeypatch.delenv("CHAOS_POSTGRES_URL", raising=False)
    code, summary, where = chaos_run(
        tmp_path,
        "--split",
        f"--orders={ORDERS}",
        "--load-seconds=15",
        "--workers=1",
        "--worker-concurrency=1",
        "--web-concurrency=1",
        "--quiet-timeout=180",
        "--timeout=420",
        "--api-sample=10",
    )

    assert_clean(code, summary, where, orders=ORDERS, faults=FAULTS)
    assert set(summary["database"]) == {"shop", "payments", "notifications"}, where
    # One email per order event (placed, then completed or cancelled, or both), each once.
    emails = summary["emails"]
    assert emails["order_events"] >= 2 * ORDERS, where
    assert emails["exactly_once"] == emails["order_events"] == emails["received"], where
    # Exactly-once measured in each publishing service, and the bus empty at rest.
    counted = [row for row in summary["rows"] if row[0].startswith("counted effects")]
    assert [row[0].split(":")[0] for row in counted] == [
        "counted effects (shop)",
        "counted effects (payments)",
    ], where
    assert all(row[2] is True for row in counted), where
    assert not any(
        n for queue, n in summary["bus_queues"].items() if not queue.endswith(".unroutable")
    ), where
