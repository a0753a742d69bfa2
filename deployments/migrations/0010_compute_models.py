"""Deployment.target and Replica.host point at the models' new app (compute). State only:
the columns and foreign keys reference the same tables as before."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('compute', '0001_initial'),
        ('deployments', '0009_gateway_failures_in_traffic_samples'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name='deployment',
                    name='target',
                    field=models.ForeignKey(blank=True, help_text='Where it runs; empty: the default target (MODELPORT_DEFAULT_TARGET or the one flagged default).', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='deployments', to='compute.executiontarget'),
                ),
                migrations.AlterField(
                    model_name='replica',
                    name='host',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='replicas', to='compute.host'),
                ),
            ],
        ),
    ]
