from django.apps import AppConfig


class CountingappConfig(AppConfig):
    name = "chaos.countingapp"
    label = "countingapp"
    verbose_name = "Chaos: counting subscribers (not idempotent on purpose)"
    default_auto_field = "django.db.models.BigAutoField"
