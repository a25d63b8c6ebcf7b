from importlib import import_module

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = "Outbox (events and deliveries)"

    def ready(self) -> None:
        # Refuse unknown OUTBOX keys (a typo) when the process starts, not at its first delivery.
        from outbox.conf import outbox_settings

        outbox_settings()
        # Missing or malformed encryption keys stop every process here; keys that cannot open
        # the stored events are a database check (outbox.E002).
        from django.core import checks

        from outbox.checks import keys_stored_check
        from outbox.crypto import cipher

        cipher()
        checks.register(keys_stored_check, checks.Tags.database)
        # Every app's events and their subscribers are known before the first publish.
        autodiscover_modules("events")
        autodiscover_modules("handlers")
        # The Celery tasks hand the relay, the wake-up and the publisher what they send with.
        import_module("outbox.tasks")
