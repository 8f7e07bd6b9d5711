"""ASGI routes of the `/v1/` API, served by this app's Channels consumers ahead of Django."""

from django.urls import re_path

from openai_api.model_list import ModelConsumer, ModelsConsumer

http_urlpatterns = [
    re_path(r"^v1/models$", ModelsConsumer.as_asgi()),
    re_path(r"^v1/models/(?P<model>[^/]+)$", ModelConsumer.as_asgi()),
    # Conversations and Chat Completions (openai_api.conversations, openai_api.chat) ...
    # Responses (openai_api.responses) ...
]
