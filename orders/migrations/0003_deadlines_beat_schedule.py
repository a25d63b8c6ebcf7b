"""Beat's schedule for orders: fire due saga deadlines every 5 seconds."""

import json

from django.db import migrations

NAME = "orders: fire saga deadlines"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "orders.deadlines_fire",
            "interval": interval,
            "kwargs": json.dumps({}),
            "queue": "orders",
            "enabled": True,
            # A missed tick is worth nothing once the next one comes.
            "expire_seconds": 30,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_cancellation_and_deadlines"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
