"""Fixtures shared by the whole suite.

End-to-end tests run a real Celery worker (celery.contrib.testing, in a thread of this process)
on the broker the settings name: kombu's filesystem transport by default, Redis when
CELERY_BROKER_URL says so. Nothing here uses task_always_eager.
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from harness.smtp import SmtpInbox
from shop.celery import app as celery_app
from tests.support import relay_ticker, require_service, running_worker

# No test can hang the suite or keep it from exiting (tests/exit_guard.py says how), and the run
# leaves nothing behind (tests/leftovers.py). One list: a second assignment would replace the first.
pytest_plugins = ["tests.exit_guard", "tests.leftovers"]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, with one step before the test database is dropped: processes a test left
    running are ended (the exit guard names them), and sessions still open on the database are
    named and ended (tests/leftovers.py names them), so the drop never fails on them and the run
    says who held it."""
    from tests.exit_guard import children_end_now  # imported here: pytest loads them as plugins
    from tests.leftovers import database_sessions_end

    yield
    children_end_now()
    database_sessions_end()


@pytest.fixture(scope="session", autouse=True)
def isolated_broker(tmp_path_factory):
    """Give this run a broker space of its own, so it never meets another run's messages."""
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = tmp_path_factory.mktemp("broker")
        (folder / "processed").mkdir()
        celery_app.conf.broker_transport_options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.02,
        }
    elif url.startswith("redis://"):
        require_service(url, "Redis")
        # The settings' own options, if any, stay: tests run them.
        celery_app.conf.broker_transport_options = {
            **(celery_app.conf.broker_transport_options or {}),
            "global_keyprefix": f"test-{os.getpid()}-{uuid.uuid4().hex[:6]}:",
        }
    yield


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Passwords this process sets are hashed with MD5: the production hasher (PBKDF2, a million
    rounds) costs about a second per user created or login on a loaded machine, and no test is
    about its strength. The production hashers stay listed, so a password a subprocess set (the
    demo's, seeded by manage.py) is still checked here."""
    md5 = "django.contrib.auth.hashers.MD5PasswordHasher"
    with override_settings(PASSWORD_HASHERS=[md5, *settings.PASSWORD_HASHERS]):
        yield


@pytest.fixture(scope="session", autouse=True)
def database_service():
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        require_service(f"postgres://{db['HOST']}:{db['PORT'] or 5432}", "PostgreSQL")


@pytest.fixture(autouse=True)
def wake_by_broker(settings):
    """The suite's tests steer the relay's wake-ups by replacing ``relay_wake`` (dropping them,
    counting who asked), which is the wake-up after commit; on PostgreSQL the settings wake the
    relay by NOTIFY instead, so the suite runs with that off, and the tests of NOTIFY turn it on
    (tests/outbox/test_wake.py, ``by_notify``). ``TEST_WAKE_BY_NOTIFY=1`` keeps the settings'."""
    if os.environ.get("TEST_WAKE_BY_NOTIFY") != "1":
        settings.OUTBOX = {**settings.OUTBOX, "WAKE_BY_NOTIFY": False}


@pytest.fixture(autouse=True)
def simulated_gateway_forgets():
    """Every test starts with a simulated gateway that remembers no idempotency key: it keeps
    them in this process's memory, keyed by order id, and SQLite gives a flushed table's ids
    again, so a saga test's order 2 was once answered with an earlier test's decline for its
    order 2 (tests/saga/test_cancellation_e2e.py, seen on SQLite once continuation landed)."""
    from payments.gateway import simulated_gateway_reset

    simulated_gateway_reset()
    yield
    simulated_gateway_reset()


@pytest.fixture
def outbox_fast(settings):
    """Short leases and quick retries so that recovery paths finish in seconds."""
    settings.OUTBOX = {
        **settings.OUTBOX,
        "LEASE_SECONDS": 1.0,
        "BACKOFF_BASE_SECONDS": 0.05,
        "BACKOFF_CAP_SECONDS": 0.3,
    }
    return settings.OUTBOX


@pytest.fixture
def worker(transactional_db, outbox_fast):
    """A real Celery worker (2 threads) on every queue, plus a 'beat' ticking the relay."""
    with running_worker(), relay_ticker():
        yield


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server in this process, and Django's SMTP backend pointed at it (what
    EMAIL_URL=smtp://127.0.0.1:<port> configures); its ``messages`` are what it accepted."""
    with SmtpInbox() as inbox:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", inbox.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        yield inbox
