"""The NATS consumer's pull on a slow server: an answer that comes late is an idle poll, not a
lost connection (no re-binding, no backoff), and the next message is taken as usual."""

from __future__ import annotations

import logging
import threading
import uuid

from outbox.bus.adapters.base import Verdict
from outbox.bus.adapters.nats import NatsAdapter
from tests.bus.conftest import NATS_URL
from tests.support import require_service, wait_until


def test_a_pull_answered_late_is_an_idle_poll_not_a_reconnect(monkeypatch, caplog):
    require_service(NATS_URL, "NATS")
    adapter = NatsAdapter(NATS_URL, namespace=f"test-pull-{uuid.uuid4().hex[:8]}")
    binds, late = [], [2]  # the first two pulls end as a late server answer ends them

    real_bind = NatsAdapter._bind

    async def bind(self, service):
        subscription = await real_bind(self, service)
        real_fetch = subscription.fetch
        binds.append(subscription)

        async def fetch(batch=1, timeout=5, heartbeat=None):
            if late[0]:
                late[0] -= 1
                raise TimeoutError  # asyncio's, as nats-py raises it when no answer came
            return await real_fetch(batch, timeout=timeout)

        subscription.fetch = fetch
        return subscription

    monkeypatch.setattr(NatsAdapter, "_bind", bind)
    received, stop = [], threading.Event()

    def on_batch(messages):
        received.extend(message.body for message in messages)
        return [Verdict.ACK] * len(messages)

    consumer = threading.Thread(
        target=adapter.consume,
        kwargs=dict(
            service="pull",
            event_types=["tests.Pulled"],
            on_batch=on_batch,
            stop=stop,
            prefetch=10,
        ),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="outbox.bus.adapters.nats"):
            consumer.start()
            wait_until(lambda: not late[0], timeout=30, what="two late pulls")

            async def send():
                js = await adapter._connect()
                await js.publish(adapter.subject("tests.Pulled"), b"{}")

            adapter._run(send())
            wait_until(lambda: received, timeout=30, what="the message after the late pulls")
            # Before the connection is closed (closing it logs a warning of its own).
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        stop.set()
        consumer.join(30)
        adapter.topology_delete(services=["pull"])
        adapter.close()
    assert received == [b"{}"]
    assert len(binds) == 1, "the consumer bound again after a late pull"
    assert warnings == []
