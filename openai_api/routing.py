"""ASGI routes of the `/v1/` API, served by this app's Channels consumers ahead of Django."""

from django.urls import re_path

from openai_api.chat import ChatCompletionsConsumer
from openai_api.conversations import (
    ConversationCollectionConsumer,
    ConversationConsumer,
    ConversationItemConsumer,
    ConversationItemsConsumer,
)
from openai_api.http import UnknownRouteConsumer
from openai_api.model_list import ModelConsumer, ModelsConsumer
from openai_api.responses.consumers import ResponseConsumer, ResponseInputItemsConsumer, ResponsesConsumer

http_urlpatterns = [
    re_path(r"^v1/models$", ModelsConsumer.as_asgi()),
    re_path(r"^v1/models/(?P<model>[^/]+)$", ModelConsumer.as_asgi()),
    re_path(r"^v1/conversations$", ConversationCollectionConsumer.as_asgi()),
    re_path(r"^v1/conversations/(?P<conversation_id>[^/]+)$", ConversationConsumer.as_asgi()),
    re_path(r"^v1/conversations/(?P<conversation_id>[^/]+)/items$", ConversationItemsConsumer.as_asgi()),
    re_path(
        r"^v1/conversations/(?P<conversation_id>[^/]+)/items/(?P<item_id>[^/]+)$", ConversationItemConsumer.as_asgi()
    ),
    re_path(r"^v1/chat/completions$", ChatCompletionsConsumer.as_asgi()),
    re_path(r"^v1/responses$", ResponsesConsumer.as_asgi()),
    re_path(r"^v1/responses/(?P<response_id>[^/]+)$", ResponseConsumer.as_asgi()),
    re_path(r"^v1/responses/(?P<response_id>[^/]+)/input_items$", ResponseInputItemsConsumer.as_asgi()),
    re_path(r"^v1/", UnknownRouteConsumer.as_asgi()),  # last: the rest of /v1/ is a 404 in OpenAI's shape
]
