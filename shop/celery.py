"""The Celery app. Tasks are found in each installed app's ``tasks`` module."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded default) writes its messages atomically; see shop/broker.py.
TRANSPORT_ALIASES["filesystem"] = "shop.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
