"""This installation's id, generated once per database (teams.installation)."""

import uuid

from django.db import migrations, models


def create_installation(apps, schema_editor):
    Installation = apps.get_model("teams", "Installation")
    if not Installation.objects.exists():
        Installation.objects.create(pk=1, uid=uuid.uuid4().hex)


class Migration(migrations.Migration):

    dependencies = [
        ('teams', '0002_platform_settings'),
    ]

    operations = [
        migrations.CreateModel(
            name='Installation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('uid', models.CharField(editable=False, max_length=32, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'constraints': [models.CheckConstraint(condition=models.Q(('pk', 1)), name='installation_singleton')],
            },
        ),
        migrations.RunPython(create_installation, migrations.RunPython.noop),
    ]
