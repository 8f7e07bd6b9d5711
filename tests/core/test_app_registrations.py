"""What the apps register with core at start-up (the Auditors' permissions, the route labels),
core naming none of them itself."""

from __future__ import annotations

import pytest

from core.admin_auth import auditors_group
from core.observability.access import route_of

SESSION = "/0b6f1c9e-9f0e-4c47-8a55-0e7c64b7b6a1"


@pytest.mark.django_db
def test_the_auditors_group_gets_each_apps_read_permissions() -> None:
    group = auditors_group()

    granted = {(p.content_type.app_label, p.codename) for p in group.permissions.all()}

    assert granted == {
        ("audit", "view_auditevent"),
        ("sessions_app", "view_sessionrecord"),
        ("sessions_app", "view_transcript"),
    }


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/api/v1/sessions", "/api/v1/sessions"),
        (f"/api/v1/sessions{SESSION}", "/api/v1/sessions/{id}"),
        (f"/api/v1/sessions{SESSION}/messages", "/api/v1/sessions/{id}/messages"),
        (f"/api/v1/sessions{SESSION}/end", "/api/v1/sessions/{id}/end"),
        (f"/api/v1/sessions{SESSION}/resume", "/api/v1/sessions/{id}/resume"),
        (f"/ws/v1/sessions{SESSION}", "/ws/v1/sessions/{id}"),
        ("/api/v1/me", "/api/v1/me"),
        ("/api/v1/me/export", "/api/v1/me/export"),
        ("/healthz", "/healthz"),
        ("/metrics", "/metrics"),
        ("/admin/audit/auditevent/", "/admin/..."),
        (f"/api/v1/sessions{SESSION}/nothing-here", "other"),
        ("/wp-login.php", "other"),
        ("/v1/responses", "/v1/responses"),
        ("/v1/responses/resp_" + "a1" * 16, "/v1/responses/{id}"),
        ("/v1/responses/resp_" + "a1" * 16 + "/input_items", "/v1/responses/{id}/input_items"),
        ("/v1/conversations/conv_" + "0" * 32 + "/items/msg_Ab-_9", "/v1/conversations/{id}/items/{id}"),
        ("/v1/responses/resp_" + "x" * 65, "other"),
        ("/v1/responses/anything", "other"),
    ],
)
def test_each_apps_routes_are_labelled_by_their_template(path: str, label: str) -> None:
    assert route_of(path) == label
