"""The URLconf the OpenAPI schema is generated from: the API's Django routes plus the
documentation of the routes Channels consumers serve."""

from django.urls import path

from archive.api.urls import urlpatterns as archive_urls
from sessions_app.api.schema import TurnEndpointSchema
from sessions_app.api.urls import urlpatterns as session_urls

urlpatterns = [
    *[path(f"api/v1/{p.pattern}", p.callback, name=p.name) for p in [*session_urls, *archive_urls]],
    path("api/v1/sessions/<str:session_id>/messages", TurnEndpointSchema.as_view()),
]
