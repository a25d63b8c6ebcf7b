"""The observer's settings in ``make chaos ARGS=--split``: the monolith's (every app installed,
so the checks import every model), with one database alias per service of the split deployment
and a router that reads each app's tables from its own service's database.

Only the driver process of the run uses them (``DJANGO_SETTINGS_MODULE=chaos.split_settings``);
the processes of Procfile.split run ``shop.settings`` in their service's shape. The aliases'
URLs come from ``CHAOS_SPLIT_DATABASES`` (JSON, {service: URL}), written by chaos.split.
"""

import json
import os

import dj_database_url

from shop.services import SERVICES
from shop.settings import *  # noqa: F403
from shop.settings import DATABASES

for _service, _url in json.loads(os.environ["CHAOS_SPLIT_DATABASES"]).items():
    if _service != "shop":  # the shop service's database is "default"
        DATABASES[_service] = dj_database_url.parse(_url, conn_max_age=0)

DATABASE_ROUTERS = ["chaos.split_settings.ServiceRouter"]


class ServiceRouter:
    """Each app's models read from (and, for the few writes of the observer, go to) the database
    of the service that installs it; the outbox's tables are read with ``using`` explicitly."""

    ALIASES = {
        app: service.name
        for service in SERVICES.values()
        if service.name != "shop"
        for app in service.apps
    }

    def db_for_read(self, model, **hints):
        return self.ALIASES.get(model._meta.app_label)

    db_for_write = db_for_read
