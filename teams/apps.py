from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"
    verbose_name = "Teams, tokens and audit"

    def ready(self) -> None:
        from .api import schema  # noqa: F401 - registers the OpenAPI auth extensions
