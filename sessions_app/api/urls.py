"""Django URLs of the session API (the turn endpoint is routed to its consumer in config/asgi.py)."""

from django.urls import path

from sessions_app.api.views import SessionCollectionView, SessionDetailView, SessionEndView, SessionResumeView

urlpatterns = [
    path("sessions", SessionCollectionView.as_view(), name="session-collection"),
    path("sessions/<str:session_id>", SessionDetailView.as_view(), name="session-detail"),
    path("sessions/<str:session_id>/end", SessionEndView.as_view(), name="session-end"),
    path("sessions/<str:session_id>/resume", SessionResumeView.as_view(), name="session-resume"),
]
