"""Fixtures of the bus tests: a private namespace per test on the real brokers, and a consumer
process on a database of its own."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from harness.services import RabbitMQNode, rabbitmq_server_binary
from outbox import publish
from outbox.bus import publishing
from tests.support import IN_CI, all_queues, relay_ticker, require_service, running_worker
from tests.testapp.events import ThingHappened

NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
ROOT = Path(__file__).resolve().parents[2]
CONSUME = ["manage.py", "bus_consume"]
# The consuming services the bus tests start (OtherService names), their topology deleted after.
SERVICES = ["downstream", "bystander"]


# The fault tests (a consumer killed, a broker restarted) take tens of seconds each: they run
# once, in the PostgreSQL + Redis pass, where the publisher side is the production path.
def fault_test(test):
    test = pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="broker fault tests run in the PostgreSQL + Redis pass",
    )(test)
    return pytest.mark.postgres(test)


@pytest.fixture
def bus_namespace():
    return f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rabbitmq_bus(settings, bus_namespace):
    """EVENT_BUS_URL on RabbitMQ, every event externalised, in a namespace of this test's own;
    everything it declared is deleted afterwards."""
    require_service(RABBITMQ_URL, "RabbitMQ")
    settings.EVENT_BUS_URL = RABBITMQ_URL
    settings.EVENT_BUS = {**settings.EVENT_BUS, "NAMESPACE": bus_namespace, "EXTERNALISE_ALL": True}
    publishing._adapter.cache_clear()
    yield RABBITMQ_URL
    publishing.bus_adapter().close()
    publishing._adapter.cache_clear()
    from outbox.bus.adapters.rabbitmq import RabbitMQAdapter

    RabbitMQAdapter(RABBITMQ_URL, namespace=bus_namespace).topology_delete(
        services=["shop", *SERVICES]
    )


@pytest.fixture
def nats_bus(settings, bus_namespace):
    """EVENT_BUS_URL on NATS JetStream, as rabbitmq_bus; the namespace's streams are deleted
    afterwards."""
    require_service(NATS_URL, "NATS")
    yield from _nats_bus(settings, bus_namespace, NATS_URL)


def _nats_bus(settings, namespace: str, url: str):
    settings.EVENT_BUS_URL = url
    settings.EVENT_BUS = {**settings.EVENT_BUS, "NAMESPACE": namespace, "EXTERNALISE_ALL": True}
    publishing._adapter.cache_clear()
    yield url
    publishing.bus_adapter().close()
    publishing._adapter.cache_clear()
    from outbox.bus.adapters.nats import NatsAdapter

    adapter = NatsAdapter(url, namespace=namespace)
    try:
        adapter.topology_delete(services=["shop", *SERVICES])
    finally:
        adapter.close()


class OtherService:
    """A second service: its own SQLite database, its own broker folder, consuming the test
    app's events (``tests.*``) from the bus with ``manage.py bus_consume``."""

    def __init__(self, folder: Path, *, bus_url: str, namespace: str, name: str = "downstream"):
        self.folder = folder
        self.name = name
        self.db = folder / "other.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "CELERY_BROKER_URL": "",
            "SHOP_VAR_DIR": str(folder),
            "SHOP_BROKER_DIR": str(folder / "broker"),
            "SHOP_TEST_APPS": "1",
            "EVENT_BUS_URL": bus_url,
            "EVENT_BUS_NAMESPACE": namespace,
            "EVENT_BUS_SERVICE": name,
            # A killed consumer's message comes back after seconds, not the default 30.
            "EVENT_BUS_ACK_WAIT_SECONDS": "3",
            # The shop's apps are "elsewhere": this service consumes the test app's events.
            "EVENT_BUS_LOCAL_APPS": "orders,payments,inventory,shipping",
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus"),
            "LOG_FORMAT": "console",
        }
        self.process: subprocess.Popen | None = None
        self.log = folder / "consumer.log"

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def start(self, *, script: str | None = None) -> subprocess.Popen:
        command = [sys.executable, "-c", script] if script else [sys.executable, *CONSUME]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self.process

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def query(self, sql: str, params=()) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=10) as db:
            return db.execute(sql, params).fetchall()

    def events(self) -> list[tuple]:
        return self.query("SELECT event_id, type, aggregate_id FROM outbox_event ORDER BY position")

    def received(self) -> dict[str, float]:
        """What its consumer settled, by outcome (stored, duplicate, ignored, dead, retry)."""
        return {
            outcome: value
            for (_, outcome), value in bus_received(self.env["PROMETHEUS_MULTIPROC_DIR"]).items()
        }


def bus_received(folder) -> dict[tuple[str, str], float]:
    """What the consumers whose metrics are in ``folder`` (their PROMETHEUS_MULTIPROC_DIR)
    settled, by (service, outcome): stored, duplicate, ignored, dead, retry."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return {
        (sample.labels["service"], sample.labels["outcome"]): sample.value
        for family in registry.collect()
        if family.name == "outbox_bus_received"
        for sample in family.samples
        if sample.name == "outbox_bus_received_total"
    }


@pytest.fixture(scope="session")
def other_service_template(tmp_path_factory):
    """A migrated database for the second service, made once per run and copied per test."""
    folder = tmp_path_factory.mktemp("other-template")
    service = OtherService(folder, bus_url="", namespace="unused")
    service.migrate()
    return service.db


@pytest.fixture
def other_service(tmp_path, other_service_template, bus_namespace):
    def make(bus_url: str, name: str = "downstream") -> OtherService:
        folder = tmp_path if name == "downstream" else tmp_path / name
        folder.mkdir(exist_ok=True)
        service = OtherService(folder, bus_url=bus_url, namespace=bus_namespace, name=name)
        service.db.write_bytes(other_service_template.read_bytes())
        made.append(service)
        return service

    made: list[OtherService] = []
    yield make
    for service in made:
        service.stop()


@pytest.fixture
def bus_worker(transactional_db, outbox_fast):
    """A real Celery worker on every queue and the bus queue, with a relay ticker."""
    with running_worker(queues=sorted({*all_queues(), "bus"})), relay_ticker():
        yield


def publish_things(aggregates: int, seqs: range) -> None:
    for seq in seqs:
        with transaction.atomic():
            for n in range(aggregates):
                publish(ThingHappened(thing_id=f"agg-{n}", seq=seq))


CRASH_AFTER_COMMIT = """
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()
from django.core.management import call_command
from outbox.bus.adapters.base import Verdict
import outbox.management.commands.bus_consume as command

real = command.bus_messages_receive

def receive(*, messages, adapter, **options):
    verdicts = real(messages=messages, adapter=adapter, **options)
    if Verdict.ACK in verdicts:
        # The batch is committed; the broker never hears the acks. How many it stored:
        with open(os.path.join(os.environ["SHOP_VAR_DIR"], "stored-before-crash"), "w") as note:
            note.write(str(verdicts.count(Verdict.ACK)))
        os._exit(17)
    return verdicts

command.bus_messages_receive = receive
call_command("bus_consume")
"""


@pytest.fixture(scope="session")
def rabbitmq_node_shared(tmp_path_factory, django_db_setup):
    """One RabbitMQ node of this run's own (harness/services.py) for the tests that stop and
    start a broker (``rabbitmq_node``, tests/bus/test_rabbitmq.py): one boot, not one per test.
    The machine's node is never touched. After the test database (``django_db_setup``), so it
    is closed before the database's teardown ends the children left running."""
    try:
        binary = rabbitmq_server_binary()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    node = RabbitMQNode(log_folder=tmp_path_factory.mktemp("rabbitmq-node"), binary=binary)
    try:
        node.create()
        yield node
    finally:
        node.close()
