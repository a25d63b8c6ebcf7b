"""Fixtures of the split deployment's tests: a database per service of shop/services.py (SQLite
files in the SQLite pass, PostgreSQL databases next to the test database in the PostgreSQL
pass, dropped afterwards), and the environment a process of the split gets."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from harness.services import Database, PostgresServer
from shop.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
# What the test run's own environment holds that a process of the split must not inherit: the
# suite's test app (its events are nobody's), and every service's database and broker.
NOT_INHERITED = (
    {"SHOP_SERVICE", "SHOP_TEST_APPS", "EVENT_BUS_URL", "EVENT_BUS_NAMESPACE", "PORT"}
    | {s.database_env for s in SERVICES.values()}
    | {s.broker_env for s in SERVICES.values()}
)


def postgres_pass() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


@pytest.fixture
def service_databases(tmp_path):
    """{service: database URL}, one database per service of the map, empty."""
    if not postgres_pass():
        yield {name: f"sqlite:///{tmp_path / f'{name}.sqlite3'}" for name in SERVICES}
        return
    db = settings.DATABASES["default"]
    server = PostgresServer(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 5432),
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
    )
    run = uuid.uuid4().hex[:6]
    databases = {name: Database(server, f"{db['NAME']}_split{run}_{name}") for name in SERVICES}
    try:
        for database in databases.values():
            database.create()
        yield {name: database.url for name, database in databases.items()}
    finally:
        for database in databases.values():
            database.drop()


def split_env(tmp_path: Path, databases: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of the split's processes: each service's database by its variable."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        {SERVICES[name].database_env: url for name, url in databases.items()},
        SHOP_VAR_DIR=str(tmp_path / "var"),
        **extra,
    )
    return env
