"""The chaos run's private PostgreSQL cluster (harness/services.py): made, restarted cleanly and
by a crash without losing a committed row, then stopped and removed with its log kept.

A few seconds (initdb); once, in the PostgreSQL pass, where the server's binaries are installed.
"""

from __future__ import annotations

import psycopg
import pytest
from django.conf import settings

from harness.services import PostgresCluster, postgres_bindir
from tests.support import IN_CI

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="runs in the PostgreSQL pass",
    ),
]


@pytest.fixture
def bindir():
    try:
        return postgres_bindir()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_private_cluster_restarts_keep_committed_rows_and_close_removes_it(tmp_path, bindir):
    cluster = PostgresCluster(log_folder=tmp_path, bindir=bindir)
    try:
        cluster.create()
        folder = cluster.folder
        with cluster.server.connect() as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        held = cluster.server.connect()

        cluster.restart("fast")
        with pytest.raises(psycopg.OperationalError):  # its session was ended
            held.execute("SELECT 1")
        held.close()
        cluster.restart("immediate")  # a crash: the start replays the WAL
        with cluster.server.connect() as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        assert cluster.restarts == 2
        with pytest.raises(ValueError):
            cluster.restart("smart")
    finally:
        cluster.close()
    assert not folder.exists()
    assert "database system is ready to accept connections" in (
        (tmp_path / "postgres.log").read_text()
    )
    with pytest.raises(psycopg.OperationalError):
        cluster.server.connect(timeout=2)
