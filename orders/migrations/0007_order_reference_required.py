from django.db import migrations, models

import orders.models


class Migration(migrations.Migration):
    dependencies = [("orders", "0006_order_reference")]

    operations = [
        migrations.AlterField(
            model_name="order",
            name="reference",
            field=models.CharField(
                default=orders.models.order_reference_new,
                editable=False,
                max_length=20,
                unique=True,
            ),
        ),
    ]
