from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        # Deployments follow registry aliases; the registry announces a move with a signal
        # because it sits below deployments and never imports it.
        from registry.signals import alias_moved

        from .services import on_alias_moved

        alias_moved.connect(on_alias_moved, dispatch_uid="deployments.follow_alias")
