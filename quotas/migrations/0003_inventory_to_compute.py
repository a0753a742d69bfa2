"""Host, GpuDevice and GpuAllocation now belong to compute (compute/migrations/0001_initial.py).
State only: their tables stay (compute's models keep the names)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('quotas', '0002_multi_host'),
        ('compute', '0001_initial'),
        ('deployments', '0010_compute_models'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='gpudevice',
                    name='host',
                ),
                migrations.RemoveField(
                    model_name='host',
                    name='target',
                ),
                migrations.DeleteModel(
                    name='GpuAllocation',
                ),
                migrations.DeleteModel(
                    name='GpuDevice',
                ),
                migrations.DeleteModel(
                    name='Host',
                ),
            ],
        ),
    ]
