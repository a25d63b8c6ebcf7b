"""The Celery app. Tasks are found in each installed app's ``tasks`` module."""

import os

from celery import Celery, signals
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded default) writes its messages atomically; see shop/broker.py.
TRANSPORT_ALIASES["filesystem"] = "shop.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The relay's worker listens for commits when they wake it by NOTIFY (outbox/wake.py).
app.steps["worker"].add("outbox.tasks:RelayListening")
app.steps["worker"].add("outbox.tasks:RelayPublishing")


@signals.task_prerun.connect(weak=False)
@signals.task_postrun.connect(weak=False)
def database_connections_tidy(**kwargs) -> None:
    """Treat each task as Django treats a request: close connections that are broken or older
    than ``CONN_MAX_AGE``, keep the others for the next task.

    Celery's Django fix-up would close every connection before and after every task (a new
    PostgreSQL session per delivery) unless ``CELERY_DB_REUSE_MAX`` is set; the settings set
    it, and this takes over, so ``DATABASE_CONN_MAX_AGE`` means the same in every process.
    """
    request = getattr(kwargs.get("task"), "request", None)
    if getattr(request, "is_eager", False):
        return  # run inline in the caller's thread: its connection is the caller's business
    from django.db import close_old_connections

    close_old_connections()


@signals.celeryd_after_setup.connect(weak=False)
def worker_queues_check(sender, instance, **kwargs) -> None:
    """A worker given an empty queue name stops at once instead of consuming nothing.

    The Procfile's workers take ``--queues "$(python manage.py outbox_queues)"``; when that
    command fails (it prints why), the worker would otherwise start on a queue named "".
    SystemExit, not an exception: Celery logs and ignores exceptions raised by receivers.
    """
    if "" in instance.app.amqp.queues.consume_from:
        raise SystemExit(
            "worker started with an empty queue name: did `manage.py outbox_queues` fail?"
        )
