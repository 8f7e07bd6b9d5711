"""Root URLs served by Django (the turn endpoint is routed ahead of Django in config/asgi.py)."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import views as core_views
from core.admin_auth import oidc_urlpatterns
from core.admin_signout import sign_out
from openai_api.schema import schema_view as openai_schema_view

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics_view, name="metrics"),
    path("dev/jwks.json", core_views.dev_jwks, name="dev-jwks"),
    path("api/v1/", include("sessions_app.api.urls")),
    path("api/v1/", include("archive.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(urlconf="config.schema_urls"), name="schema"),
    path("api/schema/v1/", openai_schema_view, name="schema-v1"),  # the OpenAI-compatible /v1/ API
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/logout/", sign_out, name="admin_sign_out"),  # ahead of the admin's: also ends the provider's
    path("admin/", admin.site.urls),
    path("oidc/", include(oidc_urlpatterns())),  # 404 unless admin OIDC is on
]

handler400 = "core.views.bad_request"
handler403 = "core.views.permission_denied"
handler404 = "core.views.not_found"
handler500 = "core.views.server_error"
