"""``bench.remote_ping_noop`` (queue ``bench``): notes when the consuming service ran it."""

from bench.benchapp.events import RemotePing
from bench.benchapp.record import handler_started
from outbox import subscribe


@subscribe(RemotePing)
def remote_ping_noop(event: RemotePing) -> None:
    handler_started(event.tag, event.ping_id)
