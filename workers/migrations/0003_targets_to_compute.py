"""ExecutionTarget now belongs to compute (compute/migrations/0001_initial.py). State only: its
table stays (compute's model keeps the name)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('workers', '0002_execution_targets'),
        ('compute', '0001_initial'),
        ('deployments', '0010_compute_models'),
        ('quotas', '0003_inventory_to_compute'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(
                    name='ExecutionTarget',
                ),
            ],
        ),
    ]
