"""Beat's schedule for the outbox: the relay every second (a safety net: publishers wake it on
commit), retention hourly. Kept in django-celery-beat's tables, so operators see it in the
admin."""

import json

from django.db import migrations

TASKS = [
    ("outbox: relay", "outbox.relay", 1, "seconds", {"source": "beat"}),
    ("outbox: purge events past retention", "outbox.purge", 1, "hours", {}),
]


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every, period, kwargs in TASKS:
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "kwargs": json.dumps(kwargs),
                "queue": "outbox",
                "enabled": True,
                # A missed tick is worth nothing once the next one comes.
                "expire_seconds": 10 if period == "seconds" else None,
            },
        )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("outbox", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
