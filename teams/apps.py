from django.apps import AppConfig

from core import host_tokens


class TeamsConfig(AppConfig):
    name = "teams"
    verbose_name = "Teams, tokens and audit"

    def ready(self) -> None:
        # app registry: these import models, which load only after ready() may run
        from . import lockout  # noqa: PLC0415 - app registry
        from .api import schema  # noqa: F401, PLC0415 - app registry; registers OpenAPI auth
        from .installation import installation_id  # noqa: PLC0415 - app registry

        lockout.connect_signals()
        host_tokens.register_installation(installation_id)
