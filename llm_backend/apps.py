"""Django app config for the model-server integration."""

from django.apps import AppConfig


class LlmBackendConfig(AppConfig):
    name = "llm_backend"
    verbose_name = "Model backends"

    def ready(self) -> None:
        from llm_backend import metrics  # noqa: F401 - registers the metrics
