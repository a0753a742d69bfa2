"""A deployment's network access (granted by platform admins) and a random key per revision
that its replicas demand. Revisions made before keep an empty key: their replicas, started
without one, demand none."""

from django.db import migrations, models

import core.replica_keys


class Migration(migrations.Migration):
    dependencies = [("deployments", "0005_multi_host")]

    operations = [
        migrations.AddField(model_name="deployment", name="egress",
                            field=models.BooleanField(default=False)),
        migrations.AddField(model_name="deployment", name="egress_reason",
                            field=models.CharField(blank=True, max_length=300)),
        migrations.AddField(model_name="revision", name="replica_key",
                            field=models.CharField(blank=True, default="", editable=False,
                                                   max_length=64)),
        migrations.AlterField(model_name="revision", name="replica_key",
                              field=models.CharField(blank=True,
                                                     default=core.replica_keys.new_key,
                                                     editable=False, max_length=64)),
    ]
