"""A deployment's runtime, fixed when it is created (workers/runtime_choice.py).

Existing deployments get the runtime they run on now: their target's kind, or — on a target
that follows MODELPORT_RUNTIME — what built their current revision's image ("local:…" for
local processes, a Docker image otherwise) or MODELPORT_RUNTIME when it names one. The others
(never built, "auto") are decided on their next reconcile, once.
"""

from django.conf import settings
from django.db import migrations, models


def _follows_settings(target):
    return target is None or (target.kind == "docker" and not target.endpoint
                              and not (target.settings or {}))


def fix_existing(apps, schema_editor):
    Deployment = apps.get_model("deployments", "Deployment")
    Revision = apps.get_model("deployments", "Revision")
    ExecutionTarget = apps.get_model("workers", "ExecutionTarget")
    default = ExecutionTarget.objects.filter(is_default=True).first()
    configured = str(getattr(settings, "MODELPORT_RUNTIME", "auto") or "auto").lower()
    for d in Deployment.objects.filter(runtime="").select_related("target"):
        target = d.target or default
        kind = ""
        if not _follows_settings(target):
            if target.kind == "docker":
                hosts = (target.settings or {}).get("placement") == "hosts"
                kind = "docker-hosts" if hosts else "docker"
            else:
                kind = target.kind
        else:
            revisions = Revision.objects.filter(deployment=d).exclude(image="")
            built = (revisions.filter(number=d.revision).first()
                     or revisions.order_by("-number").first())
            if built is not None:
                kind = "local" if built.image.startswith("local:") else "docker"
            elif configured in ("docker", "local"):
                kind = configured
        if kind:
            Deployment.objects.filter(pk=d.pk).update(runtime=kind)


class Migration(migrations.Migration):

    dependencies = [
        ("deployments", "0006_egress_and_replica_keys"),
        ("workers", "0002_execution_targets"),
    ]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="runtime",
            field=models.CharField(blank=True, choices=[("docker", "Docker"), ("local", "Local processes (unsandboxed)"), ("docker-hosts", "Docker (several hosts)"), ("swarm", "Docker Swarm"), ("kubernetes", "Kubernetes")], help_text="What runs its replicas, fixed when it was created.", max_length=20),
        ),
        migrations.RunPython(fix_existing, migrations.RunPython.noop),
    ]
