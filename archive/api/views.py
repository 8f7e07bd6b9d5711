"""`GET /api/v1/me/export` and `DELETE /api/v1/me`: everything about the caller, out or gone."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from archive.errors import ArchiveUnavailable, OwnerBusy
from archive.privacy import ErasureReceipt, OwnerExport
from archive.wiring import get_privacy_service
from core.auth.drf import ChatScopes
from core.openapi import VIEW_ERRORS
from sessions_app.api import presenters
from sessions_app.api.schema import documented
from sessions_app.api.views import owner_of
from sessions_app.services import owner_actor


def present_export(export: OwnerExport) -> dict[str, Any]:
    return {
        "owner": export.owner,
        "exported_at": presenters.iso(export.exported_at),
        "sessions": [presenters.transcript(t) for t in export.sessions],
        "records": [
            {
                "session_id": str(r.id),
                "status": r.status,
                "model": r.model,
                "created_at": presenters.iso(r.created_at),
                "last_activity_at": presenters.iso(r.last_activity_at),
                "archived_at": presenters.iso(r.archived_at) if r.archived_at else None,
                "message_count": r.message_count,
                "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens},
            }
            for r in export.records
        ],
        "audit_events": [
            {
                "at": presenters.iso(e.at),
                "actor": e.actor,
                "action": e.action,
                "target_type": e.target_type,
                "target": e.target,
                "outcome": e.outcome,
                "details": e.details,
            }
            for e in export.audit_events
        ],
        "side_stores": export.side_stores,
    }


def present_receipt(receipt: ErasureReceipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "erased_at": presenters.iso(receipt.erased_at),
        "erased": {
            "active_sessions": receipt.active_sessions,
            "archived_sessions": receipt.archived_sessions,
            "session_records": receipt.session_records,
        },
        "data_key_destroyed": receipt.data_key_destroyed,
    }


class OwnerExportView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *VIEW_ERRORS,
        ArchiveUnavailable,
        operation_id="me_export",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="Everything held about you, as one JSON document."),
        },
        summary="Export all your data (GDPR Art. 15 and 20)",
        description="Active and archived sessions with their messages, the session records and the "
        "audit events about them.",
    )
    def get(self, request: Request) -> Response:
        owner = owner_of(request)
        export = async_to_sync(get_privacy_service().export)(owner, actor=owner_actor(owner))
        return Response(present_export(export), headers={"Content-Disposition": 'attachment; filename="export.json"'})


class OwnerErasureView(APIView):
    permission_classes = [ChatScopes]

    @documented(
        *VIEW_ERRORS,
        ArchiveUnavailable,
        OwnerBusy,
        operation_id="me_erase",
        request=None,
        responses={
            200: inline_serializer(
                "ErasureReceipt",
                {
                    "id": serializers.UUIDField(),
                    "erased_at": serializers.DateTimeField(),
                    "erased": serializers.DictField(child=serializers.IntegerField()),
                    "data_key_destroyed": serializers.BooleanField(),
                },
            ),
        },
        summary="Erase everything about you (GDPR Art. 17)",
        description="Destroys your data key (so every copy of your archives is unreadable), then erases "
        "your archived and active sessions and their records. The receipt is kept, content-free, "
        "in the audit trail.",
    )
    def delete(self, request: Request) -> Response:
        owner = owner_of(request)
        receipt = async_to_sync(get_privacy_service().erase)(owner, actor=owner_actor(owner))
        return Response(present_receipt(receipt))
