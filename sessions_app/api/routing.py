"""ASGI routes served by this app's Channels consumers, ahead of Django."""

from django.urls import re_path

from sessions_app.api.consumers import TurnConsumer

http_urlpatterns = [
    re_path(r"^api/v1/sessions/(?P<session_id>[^/]+)/messages$", TurnConsumer.as_asgi()),
]
