"""`GET /api/v1/me/export` and `DELETE /api/v1/me`: everything about the caller, out or gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from archive.errors import ArchiveUnavailable, OwnerBusy
from archive.privacy import ErasureReceipt, OwnerExport
from archive.wiring import get_privacy_service
from audit.models import AuditEvent
from core.auth.drf import ChatScopes, owner_of
from core.openapi import VIEW_ERRORS, documented
from sessions_app.public import SessionRecord, owner_actor, present_time, present_transcript

T = TypeVar("T")


def present_export(export: OwnerExport) -> dict[str, Any]:
    """The export document's top-level keys in order; a list is an async iterable, written
    one item at a time by `json_stream`."""
    return {
        "owner": export.owner,
        "exported_at": present_time(export.exported_at),
        "sessions": amap(present_transcript, export.sessions),
        "records": amap(present_record, export.records),
        "audit_events": amap(present_audit_event, export.audit_events),
        "side_stores": export.side_stores,
    }


def present_record(r: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": str(r.id),
        "status": r.status,
        "model": r.model,
        "created_at": present_time(r.created_at),
        "last_activity_at": present_time(r.last_activity_at),
        "archived_at": present_time(r.archived_at) if r.archived_at else None,
        "message_count": r.message_count,
        "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens},
    }


def present_audit_event(e: AuditEvent) -> dict[str, Any]:
    return {
        "at": present_time(e.at),
        "actor": e.actor,
        "action": e.action,
        "target_type": e.target_type,
        "target": e.target,
        "outcome": e.outcome,
        "details": e.details,
    }


async def amap(present: Callable[[T], dict[str, Any]], items: AsyncIterator[T]) -> AsyncIterator[dict[str, Any]]:
    async for item in items:
        yield present(item)


async def json_stream(document: dict[str, Any]) -> AsyncIterator[bytes]:
    """One JSON object, written as it is read: an async iterable value becomes an array sent
    an item at a time, anything else is written whole."""
    for n, (key, value) in enumerate(document.items()):
        yield (b"{" if n == 0 else b",") + orjson.dumps(key) + b":"
        if not isinstance(value, AsyncIterator):
            yield orjson.dumps(value)
            continue
        first = True
        async for item in value:
            yield (b"[" if first else b",") + orjson.dumps(item)
            first = False
        yield b"[]" if first else b"]"
    yield b"}" if document else b"{}"


def present_receipt(receipt: ErasureReceipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "erased_at": present_time(receipt.erased_at),
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
        description="Active and archived sessions with their messages (oldest first), the session records "
        "and the audit events about them. The document is streamed as it is read; should a store fail "
        "half-way, the connection is cut and the document is left truncated (invalid JSON).",
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        owner = owner_of(request)
        export = async_to_sync(get_privacy_service().export)(owner, actor=owner_actor(owner))
        # Streamed: however much the owner holds, one session is in memory at a time. Should
        # the archive fail half-way, the connection is cut (the status is sent already), so
        # the client sees a truncated document, never a complete-looking partial one.
        return StreamingHttpResponse(
            json_stream(present_export(export)),
            content_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="export.json"'},
        )


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
