"""The no-op subscriber (``bench.ping_noop``, queue ``bench``): it only notes its start."""

from bench.benchapp.events import Ping
from bench.benchapp.record import handler_started
from outbox import subscribe


@subscribe(Ping)
def ping_noop(event: Ping) -> None:
    handler_started(event.tag, event.ping_id)
