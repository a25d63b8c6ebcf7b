"""Order.reference: a random public id for every order, existing ones included.

Added nullable, filled row by row, then made unique and required (0004): one default for the
whole table, as a plain AddField would compute, would give every existing order the same one.
"""

from django.db import migrations, models

import orders.models


def references_fill(apps, schema_editor):
    Order = apps.get_model("orders", "Order")
    for order in Order.objects.filter(reference__isnull=True).only("pk").iterator():
        Order.objects.filter(pk=order.pk).update(reference=orders.models.order_reference_new())


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_order_staff_permissions")]

    operations = [
        migrations.AddField(
            model_name="order",
            name="reference",
            field=models.CharField(max_length=20, null=True, editable=False),
        ),
        migrations.RunPython(references_fill, migrations.RunPython.noop),
    ]
