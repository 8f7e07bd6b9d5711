"""Django app config for the shared kernel."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Gateway core"

    def ready(self) -> None:
        # Registers the bearer scheme with drf-spectacular.
        from core.auth import schema  # noqa: F401
