"""The ASGI application: Channels consumers for the hot paths, Django for the rest."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Build Django's application first: it sets up the app registry routing imports need.
from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from config.lifespan import LifespanApp  # noqa: E402
from core.websocket import BrowserOriginValidator  # noqa: E402
from sessions_app.api.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Channels routes to ASGI apps; Django's stubs only know views.
        "http": URLRouter([*http_urlpatterns, re_path(r"", django_application)]),  # type: ignore[arg-type]
        "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns)),
        "lifespan": LifespanApp(),
    }
)
