"""The groups of the usual roles, with their permissions (docs/permissions.md).

The lists are written out here, as a migration's data must be: a later change to
shop/permissions.py.GROUPS comes with a migration of its own (a test compares the two).

In a service of the split deployment (shop/services.py) an app another service installs has no
tables here: its permissions are left out of the groups, and its migrations out of the
dependencies. The monolith installs every app and gets every permission.
"""

from django.apps import apps as installed
from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT = [
    "orders.view_order",
    "orders.view_orderline",
    "orders.view_any_order",
    "payments.view_payment",
    "payments.view_refund",
    "shipping.view_shipment",
    "inventory.view_stockreservation",
    "inventory.view_stockreservationline",
]
GROUPS = {
    "catalogue manager": [
        "inventory.view_product",
        "inventory.add_product",
        "inventory.change_product",
        "orders.view_catalogitem",
    ],
    "support": SUPPORT,
    "operator": [
        *SUPPORT,
        "orders.view_order_machinery",
        "orders.change_order",
        "shipping.change_shipment",
        "outbox.view_event",
        "outbox.view_delivery",
        "outbox.view_deadletter",
        "outbox.view_heartbeat",
        "outbox.replay_delivery",
        "django_celery_beat.view_periodictask",
        "django_celery_beat.view_intervalschedule",
        "django_celery_beat.view_crontabschedule",
        "django_celery_beat.view_solarschedule",
        "django_celery_beat.view_clockedschedule",
    ],
}


def _installed(label: str) -> bool:
    return any(config.label == label for config in installed.get_app_configs())


def groups_create(apps, schema_editor):
    # Permissions are created after all migrations ran (post_migrate); these groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, permissions in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for permission in permissions:
            app_label, codename = permission.split(".")
            if not _installed(app_label):
                continue  # another service's app (the split deployment)
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def groups_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        (app, migration)
        for app, migration in [
            ("auth", "0012_alter_user_first_name_max_length"),
            ("contenttypes", "0002_remove_content_type_name"),
            ("django_celery_beat", "0019_alter_periodictasks_options"),
            ("inventory", "0001_initial"),
            ("orders", "0005_order_staff_permissions"),
            ("outbox", "0005_delivery_replay_permission"),
            ("payments", "0001_initial"),
            ("shipping", "0001_initial"),
        ]
        if _installed(app)
    ]

    operations = [migrations.RunPython(groups_create, groups_delete)]
