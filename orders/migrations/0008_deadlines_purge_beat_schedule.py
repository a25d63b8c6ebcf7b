"""Beat's schedule for orders: purge the deadline rows of long-ended orders hourly."""

import json

from django.db import migrations

NAME = "orders: purge deadlines of ended orders"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "orders.deadlines_purge",
            "interval": interval,
            "kwargs": json.dumps({}),
            "queue": "orders",
            "enabled": True,
            # A missed run is made up by the next one.
            "expire_seconds": 1800,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0007_order_reference_required"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
