"""The split chaos run's private RabbitMQ node (harness/services.py): started beside the
machine's (whose port it never uses), a confirmed persistent message in a quorum queue kept
across a crash (SIGKILL) and a clean restart, its queue lengths and bindings read, then stopped
and removed with its log kept.

Ten to thirty seconds (an Erlang node boots three times); once, in the PostgreSQL + Redis pass
with the other chaos harness tests, where rabbitmq-server is installed.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue

from harness.services import RabbitMQNode, rabbitmq_server_binary
from tests.support import IN_CI, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="runs in the PostgreSQL pass",
    ),
]


@pytest.fixture
def binary():
    try:
        return rabbitmq_server_binary()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_private_node_keeps_confirmed_messages_across_restarts_and_close_removes_it(
    tmp_path, binary
):
    node = RabbitMQNode(log_folder=tmp_path, binary=binary)
    exchange = Exchange("kept.events", type="topic", durable=True)
    queue = Queue(
        "kept",
        exchange=exchange,
        routing_key="thing.Happened",
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )
    try:
        node.create()
        folder = node.folder
        assert node.port != 5672 and node.node.startswith("chaos-")
        with Connection(node.url, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(
                {"n": 1},
                exchange=exchange,
                routing_key="thing.Happened",
                declare=[queue],
                delivery_mode=2,
            )
        # Settled first: a quorum queue killed within milliseconds of its declaration is not
        # what a run does (its queues are declared by the release step, long before).
        wait_until(lambda: node.queues() == {"kept": 1}, timeout=60, what="the message queued")
        for restart in (node.kill, node.terminate):
            restart()
            assert node.queues() is None  # down: rabbitmqctl does not reach it
            node.start()
            wait_until(
                lambda: node.queues() == {"kept": 1},
                timeout=60,
                what=f"the message kept after {restart.__name__}",
            )
        assert node.bindings("kept.events") == {"thing.Happened"}
        with Connection(node.url) as conn:
            message = queue(conn.default_channel).get(no_ack=True)
            assert message is not None and message.payload == {"n": 1}
    finally:
        node.close()
    assert not folder.exists()
    assert node.folder is None
    assert list(tmp_path.glob("rabbitmq-server.*.log"))
    assert node.pid is not None and node.popen.poll() is not None
    with pytest.raises(RuntimeError):
        node.start()
