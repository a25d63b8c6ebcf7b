"""The short chaos run: the Procfile's real processes on a private PostgreSQL cluster (through
the latency proxy) and a private Redis, a few hundred orders over HTTP (a fifth of them
cancelled by their customer), every fault at least once (the database's restart, crash and
slowness included), and every invariant checked afterwards.

It runs in the PostgreSQL + Redis pass of `make test` (skipped on SQLite, where the processes
would not share a database worth attacking); where PostgreSQL's server binaries or
redis-server are not installed it is skipped, or fails when CI is set. The long version is
`make chaos`.
"""

from __future__ import annotations

from tests.chaos.conftest import CHAOS_TEST, assert_clean, chaos_run, require_servers

# Every fault of the default plan: the private cluster is restarted, crashed and slowed.
FAULTS = {
    "kill-worker",
    "kill-worker-child",
    "kill-relay-beat",
    "restart-redis",
    "flush-redis",
    "restart-web",
    "restart-postgres",
    "crash-postgres",
    "slow-postgres",
}
ORDERS = 250

pytestmark = CHAOS_TEST


def test_short_chaos_run_loses_nothing(tmp_path, monkeypatch):
    require_servers()
    monkeypatch.delenv("CHAOS_POSTGRES_URL", raising=False)
    code, summary, where = chaos_run(
        tmp_path,
        f"--orders={ORDERS}",
        "--load-seconds=40",
        "--quiet-timeout=180",
        "--timeout=420",
        "--api-sample=50",
    )

    assert_clean(code, summary, where, orders=ORDERS, faults=FAULTS)
    assert summary["postgres"] == "private cluster", where
    assert summary["requests_timed_out_during_database_faults"] == 0, where
    assert {int(status) for status in summary["http_statuses"]} <= {200, 201, 202, 503}, where
    # About a fifth of the orders were cancelled by their customer, each cancel answered 202
    # (nothing is handed to the carrier in a chaos run, so no 409).
    assert summary["cancels_sent"] > ORDERS // 10, where
    assert set(summary["cancels_by_answer"]) == {"202"}, where
    # Exactly-once measured: the counting subscribers took part, each effect counted once.
    (counted,) = [row for row in summary["rows"] if row[0].startswith("counted effects")]
    assert counted[2] is True, where
