from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        # Deployments follow registry aliases; the registry announces a move with a signal
        # because it sits below deployments and never imports it. App registry: these
        # modules import models, which load only after this module, so not at the top.
        from registry.signals import alias_moved  # noqa: PLC0415 - app registry
        from workers import factory, installation  # noqa: PLC0415 - app registry

        from .hosts_runtime import HostsRuntime  # noqa: PLC0415 - app registry
        from .legacy_replicas import owns_legacy_replica  # noqa: PLC0415 - app registry
        from .services import on_alias_moved  # noqa: PLC0415 - app registry

        alias_moved.connect(on_alias_moved, dispatch_uid="deployments.follow_alias")
        # The runtimes (workers, below) build several Docker hosts' runtime and recognise
        # legacy replicas through what this app registers, never by importing it.
        factory.register_target_runtime("hosts", HostsRuntime)
        installation.register_legacy_owner(owns_legacy_replica)
