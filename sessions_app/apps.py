"""Django app config for chat sessions."""

from django.apps import AppConfig

# The routes this app serves, as the access log and the HTTP metrics label them (ids as {id}).
ROUTES = (
    "/api/v1/sessions",
    "/api/v1/sessions/{id}",
    "/api/v1/sessions/{id}/messages",
    "/api/v1/sessions/{id}/end",
    "/api/v1/sessions/{id}/resume",
    "/ws/v1/sessions/{id}",
)


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Chat sessions"

    def ready(self) -> None:
        from core.auditors import grant_to_auditors
        from core.observability.access import label_routes
        from core.observability.gauges import refresh_on_scrape
        from sessions_app import checks, metrics  # noqa: F401 - registers the system checks and the metrics
        from sessions_app.health import refresh_active_sessions

        label_routes(*ROUTES)
        refresh_on_scrape(refresh_active_sessions)
        grant_to_auditors("sessions_app", "view_sessionrecord", "view_transcript")
