"""Execution targets, and a default ``docker`` target standing for what ran before: this
machine's Docker (or local processes), configured by MODELPORT_RUNTIME / MODELPORT_DOCKER_NETWORK
/ MODELPORT_PORT_RANGE, which an empty endpoint keeps following."""

from django.db import migrations, models


def create_default_target(apps, schema_editor):
    ExecutionTarget = apps.get_model("workers", "ExecutionTarget")
    if not ExecutionTarget.objects.exists():
        ExecutionTarget.objects.create(name="default", kind="docker", endpoint="",
                                       settings={}, enabled=True, is_default=True)


class Migration(migrations.Migration):

    dependencies = [
        ("workers", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ExecutionTarget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("name", models.SlugField(unique=True)),
                ("kind", models.CharField(choices=[("docker", "Docker (one host)"),
                                                   ("swarm", "Docker Swarm"),
                                                   ("kubernetes", "Kubernetes")],
                                          default="docker", max_length=20)),
                ("endpoint", models.CharField(blank=True, help_text="Docker endpoint, e.g. unix:///var/run/docker.sock or tcp://host:2376. Empty: this machine's Docker from the environment (DOCKER_HOST or the default socket).", max_length=300)),
                ("kube_context", models.CharField(blank=True, help_text="Kubernetes: kubeconfig context (empty: current).", max_length=200)),
                ("in_cluster", models.BooleanField(default=False, help_text="Kubernetes: use the pod's service account.")),
                ("namespace", models.CharField(blank=True, help_text="Kubernetes namespace.", max_length=63)),
                ("settings", models.JSONField(blank=True, default=dict)),
                ("cpu", models.DecimalField(decimal_places=3, default=0, help_text="CPUs deployments may reserve here (0: no limit).", max_digits=9)),
                ("memory_mb", models.PositiveBigIntegerField(default=0, help_text="0: no limit.")),
                ("gpus", models.PositiveIntegerField(default=0, help_text="0: no GPUs limit.")),
                ("enabled", models.BooleanField(default=True)),
                ("is_default", models.BooleanField(default=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["name"],
                "constraints": [models.UniqueConstraint(condition=models.Q(("is_default", True)),
                                                        fields=("is_default",),
                                                        name="one_default_execution_target")],
            },
        ),
        migrations.RunPython(create_default_target, migrations.RunPython.noop),
    ]
