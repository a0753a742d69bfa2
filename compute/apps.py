from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "compute"
    verbose_name = "Compute: targets, hosts and GPUs"

    def ready(self) -> None:
        # Quotas (below) refuses limits beyond what the platform can run; the inventory is
        # this app's, so it hands quotas a provider instead of quotas importing it.
        from quotas import capacity  # noqa: PLC0415 - app registry: models load after ready()

        from .inventory import platform_capacity  # noqa: PLC0415 - app registry

        capacity.register(platform_capacity)
