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
        # Every app's events and their subscribers are known before the first publish.
        autodiscover_modules("events")
        autodiscover_modules("handlers")
        # The Celery tasks hand the relay, the wake-up and the publisher what they send with.
        import_module("outbox.tasks")
