from django.apps import AppConfig


class ShopConfig(AppConfig):
    """The wiring layer: URLs, the Celery app, demo data. It may import every app; no app
    imports it."""

    name = "shop"

    def ready(self) -> None:
        from shop.auth import receivers_connect

        receivers_connect()
