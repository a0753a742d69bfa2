"""The inventory's models move here from quotas (Host, GpuDevice, GpuAllocation) and workers
(ExecutionTarget). State only: the tables, their constraints and their data stay as they are
(each model keeps its ``db_table``), so ``sqlmigrate`` emits no DDL. The content types are
relabelled, so permissions and the admin's log entries follow the models."""

import django.db.models.deletion
import django.utils.timezone
from decimal import Decimal
from django.db import migrations, models

MOVED = [("quotas", "host"), ("quotas", "gpudevice"), ("quotas", "gpuallocation"),
         ("workers", "executiontarget")]


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for old_app, model in MOVED:
        if not ContentType.objects.filter(app_label="compute", model=model).exists():
            ContentType.objects.filter(app_label=old_app, model=model).update(
                app_label="compute")


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for old_app, model in MOVED:
        if not ContentType.objects.filter(app_label=old_app, model=model).exists():
            ContentType.objects.filter(app_label="compute", model=model).update(
                app_label=old_app)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("teams", "0003_installation"),
        ("quotas", "0002_multi_host"),
        ("workers", "0002_execution_targets"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='ExecutionTarget',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.SlugField(unique=True)),
                        ('kind', models.CharField(choices=[('docker', 'Docker (one host)'), ('swarm', 'Docker Swarm'), ('kubernetes', 'Kubernetes')], default='docker', max_length=20)),
                        ('endpoint', models.CharField(blank=True, help_text="Docker endpoint, e.g. unix:///var/run/docker.sock or tcp://host:2376. Empty: this machine's Docker from the environment (DOCKER_HOST or the default socket).", max_length=300)),
                        ('kube_context', models.CharField(blank=True, help_text='Kubernetes: kubeconfig context (empty: current).', max_length=200)),
                        ('in_cluster', models.BooleanField(default=False, help_text="Kubernetes: use the pod's service account.")),
                        ('namespace', models.CharField(blank=True, help_text='Kubernetes namespace.', max_length=63)),
                        ('settings', models.JSONField(blank=True, default=dict)),
                        ('cpu', models.DecimalField(decimal_places=3, default=0, help_text='CPUs deployments may reserve here (0: no limit).', max_digits=9)),
                        ('memory_mb', models.PositiveBigIntegerField(default=0, help_text='0: no limit.')),
                        ('gpus', models.PositiveIntegerField(default=0, help_text='0: no GPUs limit.')),
                        ('enabled', models.BooleanField(default=True)),
                        ('is_default', models.BooleanField(default=False)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'db_table': 'workers_executiontarget',
                        'ordering': ['name'],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('is_default', True)), fields=('is_default',), name='one_default_execution_target')],
                    },
                ),
                migrations.CreateModel(
                    name='Host',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=100, unique=True)),
                        ('kind', models.CharField(choices=[('host', 'Host'), ('pool', 'Pool')], default='host', max_length=10)),
                        ('cpu', models.DecimalField(decimal_places=3, default=Decimal('0'), max_digits=9)),
                        ('memory_mb', models.PositiveBigIntegerField(default=0)),
                        ('cpu_overcommit', models.DecimalField(decimal_places=2, default=Decimal('1'), max_digits=5)),
                        ('memory_overcommit', models.DecimalField(decimal_places=2, default=Decimal('1'), max_digits=5)),
                        ('active', models.BooleanField(default=True)),
                        ('queue', models.CharField(blank=True, help_text='Celery queue its host worker consumes (host.<name>); empty: capacity only, no replicas are placed here.', max_length=120)),
                        ('address', models.CharField(blank=True, help_text="Where its replicas answer (the host worker's MODELPORT_HOST_ADDRESS).", max_length=200)),
                        ('docker_version', models.CharField(blank=True, max_length=40)),
                        ('state', models.CharField(choices=[('alive', 'Alive'), ('lost', 'Lost (no heartbeat)')], default='alive', max_length=10)),
                        ('last_heartbeat', models.DateTimeField(blank=True, null=True)),
                        ('lost_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('target', models.ForeignKey(blank=True, help_text='The multi-host docker target whose replicas may be placed here.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='hosts', to='compute.executiontarget')),
                    ],
                    options={
                        'db_table': 'quotas_host',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='GpuDevice',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('device_id', models.CharField(help_text="As Docker's device_requests expect: index or UUID.", max_length=100)),
                        ('model', models.CharField(db_index=True, max_length=100)),
                        ('active', models.BooleanField(default=True)),
                        ('host', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='gpus', to='compute.host')),
                    ],
                    options={
                        'db_table': 'quotas_gpudevice',
                        'ordering': ['host__name', 'device_id'],
                    },
                ),
                migrations.CreateModel(
                    name='GpuAllocation',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('owner', models.CharField(db_index=True, help_text="The replica, e.g. 'deployment:fraud-v2/r0'.", max_length=200)),
                        ('allocated_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('released_at', models.DateTimeField(blank=True, null=True)),
                        ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='gpu_allocations', to='teams.team')),
                        ('device', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='allocations', to='compute.gpudevice')),
                    ],
                    options={
                        'db_table': 'quotas_gpuallocation',
                        'ordering': ['-allocated_at', '-id'],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('released_at__isnull', True)), fields=('device',), name='one_active_allocation_per_gpu')],
                    },
                ),
                migrations.AddConstraint(
                    model_name='host',
                    constraint=models.CheckConstraint(condition=models.Q(('cpu_overcommit__gte', 1), ('memory_overcommit__gte', 1)), name='host_overcommit_at_least_one'),
                ),
                migrations.AddConstraint(
                    model_name='gpudevice',
                    constraint=models.UniqueConstraint(fields=('host', 'device_id'), name='unique_gpu_per_host'),
                ),
            ],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
