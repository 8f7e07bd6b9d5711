"""The ASGI application: Channels consumers for the hot paths, Django for the rest."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

from core.observability.tracing import asgi_middleware, setup_tracing

# Tracing first: Django's instrumentation adds its middleware before Django loads it.
setup_tracing()

# Build Django's application before importing routing: it sets up the app registry.
from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from config.lifespan import LifespanApp  # noqa: E402
from core.guards import RequestLimits  # noqa: E402
from core.observability.access import AccessMiddleware, QueryTokenScrubber  # noqa: E402
from core.websocket import BrowserOriginValidator  # noqa: E402
from openai_api.routing import http_urlpatterns as openai_urlpatterns  # noqa: E402
from sessions_app.api.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402

router = ProtocolTypeRouter(
    {
        # Channels routes to ASGI apps; Django's stubs only know views.
        "http": URLRouter([*openai_urlpatterns, *http_urlpatterns, re_path(r"", django_application)]),  # type: ignore[arg-type]
        "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns)),
        "lifespan": LifespanApp(),
    }
)
# Outside in: no token in URLs, a server span per request, the access log and metrics, a bounded
# head, a bounded body.
application = QueryTokenScrubber(asgi_middleware(AccessMiddleware(RequestLimits(router))))
