"""Django app config for the OpenAI-compatible API."""

from django.apps import AppConfig

# The routes this app serves, as the access log and the HTTP metrics label them (ids as {id}).
ROUTES = (
    "/v1/models",
    "/v1/chat/completions",
    "/v1/conversations",
    "/v1/conversations/{id}",
    "/v1/conversations/{id}/items",
    "/v1/conversations/{id}/items/{id}",
    "/v1/responses",
    "/v1/responses/{id}",
    "/v1/responses/{id}/input_items",
    "/v1/responses/{id}/cancel",
)


class OpenAIApiConfig(AppConfig):
    name = "openai_api"
    verbose_name = "OpenAI-compatible API"

    def ready(self) -> None:
        from core.observability.access import label_routes

        label_routes(*ROUTES)
