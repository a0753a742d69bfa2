from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Batch scoring jobs: a dataset in, predictions out, beside deployments (same registry
    versions, quotas, images, sandbox and monitoring)."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
