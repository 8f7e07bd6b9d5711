"""Django app config for the session archive."""

from django.apps import AppConfig

# The routes this app serves, as the access log and the HTTP metrics label them.
ROUTES = ("/api/v1/me", "/api/v1/me/export")


class ArchiveConfig(AppConfig):
    name = "archive"
    verbose_name = "Session archive"

    def ready(self) -> None:
        from archive import checks, metrics  # noqa: F401 - registers the system checks and the metrics
        from archive.health import refresh_scheduler_gauges
        from core.observability.access import label_routes
        from core.observability.gauges import refresh_on_scrape

        label_routes(*ROUTES)
        refresh_on_scrape(refresh_scheduler_gauges)
