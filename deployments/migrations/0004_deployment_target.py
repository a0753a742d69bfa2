import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("deployments", "0003_shadow"),
        ("workers", "0002_execution_targets"),
    ]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="target",
            field=models.ForeignKey(blank=True, help_text="Where it runs; empty: the default target (MODELPORT_DEFAULT_TARGET or the one flagged default).", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="deployments", to="workers.executiontarget"),
        ),
    ]
