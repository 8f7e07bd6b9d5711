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
    "/api/schema/v1/",
)

# conv_..., msg_..., resp_...: labelled {id} like the native API's UUIDs.
ID_SHAPES = r"(?:conv|msg|resp)_[A-Za-z0-9_-]{1,64}"


class OpenAIApiConfig(AppConfig):
    name = "openai_api"
    verbose_name = "OpenAI-compatible API"

    def ready(self) -> None:
        from core.observability.access import label_routes
        from core.problems import render_errors_under
        from openai_api.errors import render_error

        label_routes(*ROUTES, ids=ID_SHAPES)
        render_errors_under("/v1/", render_error)
