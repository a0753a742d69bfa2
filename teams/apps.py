from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"
    verbose_name = "Teams, tokens and audit"

    def ready(self) -> None:
        from . import lockout
        from .api import schema  # noqa: F401 - registers the OpenAPI auth extensions

        lockout.connect_signals()
