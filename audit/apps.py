"""Django app config for the audit trail."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from audit import receivers  # noqa: F401 - connects the admin sign-in receiver
        from core.auditors import grant_to_auditors

        grant_to_auditors("audit", "view_auditevent")
