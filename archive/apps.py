"""Django app config for the session archive."""

from django.apps import AppConfig


class ArchiveConfig(AppConfig):
    name = "archive"
    verbose_name = "Session archive"

    def ready(self) -> None:
        from archive import checks  # noqa: F401 - registers the system checks
