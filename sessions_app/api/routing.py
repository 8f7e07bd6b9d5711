"""ASGI routes served by this app's Channels consumers, ahead of Django."""

from django.urls import re_path

from sessions_app.api.consumers import TurnConsumer
from sessions_app.api.crud import SessionCollectionConsumer, SessionDetailConsumer
from sessions_app.api.websocket import SessionSocketConsumer, UnknownSocketConsumer

http_urlpatterns = [
    re_path(r"^api/v1/sessions/(?P<session_id>[^/]+)/messages$", TurnConsumer.as_asgi()),
    # GET and POST only; the other methods go on to the DRF views.
    re_path(r"^api/v1/sessions$", SessionCollectionConsumer.as_asgi()),
    re_path(r"^api/v1/sessions/(?P<session_id>[^/]+)$", SessionDetailConsumer.as_asgi()),
]

websocket_urlpatterns = [
    re_path(r"^ws/v1/sessions/(?P<session_id>[^/]+)$", SessionSocketConsumer.as_asgi()),
    re_path(r"", UnknownSocketConsumer.as_asgi()),
]
