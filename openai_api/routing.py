"""ASGI routes of the `/v1/` API, served by this app's Channels consumers ahead of Django."""

from django.urls import re_path

from openai_api.model_list import ModelConsumer, ModelsConsumer
from openai_api.responses.consumers import ResponseConsumer, ResponseInputItemsConsumer, ResponsesConsumer

http_urlpatterns = [
    re_path(r"^v1/models$", ModelsConsumer.as_asgi()),
    re_path(r"^v1/models/(?P<model>[^/]+)$", ModelConsumer.as_asgi()),
    # Conversations and Chat Completions (openai_api.conversations, openai_api.chat) ...
    re_path(r"^v1/responses$", ResponsesConsumer.as_asgi()),
    re_path(r"^v1/responses/(?P<response_id>[^/]+)$", ResponseConsumer.as_asgi()),
    re_path(r"^v1/responses/(?P<response_id>[^/]+)/input_items$", ResponseInputItemsConsumer.as_asgi()),
]
