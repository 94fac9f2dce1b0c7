"""On PostgreSQL, usage events become a table partitioned by month of occurred_at (see
billing_app/metering/partitions.py). Nothing changes on other databases."""

from django.db import migrations


def partition(apps, schema_editor):
    from billing_app.metering.partitions import events_partition

    events_partition()


class Migration(migrations.Migration):
    dependencies = [("billing_app", "0001_initial")]

    operations = [migrations.RunPython(partition, migrations.RunPython.noop, elidable=False)]
