"""DRF serializers: input validation for the CRUD views, and the documented response shapes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.jsonbody import has_control_characters

MAX_METADATA_DEPTH = 4


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class SessionCreateSerializer(serializers.Serializer):
    model = StrictCharField(required=False, max_length=200, help_text="Defaults to the gateway's default model.")
    system_prompt = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    metadata = serializers.JSONField(required=False, default=dict, help_text="Your own JSON object, stored as given.")

    def validate_system_prompt(self, value: str) -> str:
        if has_control_characters(value):
            raise serializers.ValidationError("Must not contain control characters other than tab and line breaks.")
        return value

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        if _depth(value) > MAX_METADATA_DEPTH:
            raise serializers.ValidationError(f"Must nest at most {MAX_METADATA_DEPTH} levels deep.")
        return value


class SessionListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)
    cursor = serializers.CharField(required=False, max_length=200)
    status = serializers.ChoiceField(
        required=False,
        choices=["active", "ended", "archived"],
        help_text="`archived`: the sessions in the archive; otherwise those in the active store.",
    )


MESSAGES_PAGE_DEFAULT = 100
MESSAGES_PAGE_MAX = 1_000


class SessionDetailQuerySerializer(serializers.Serializer):
    messages_limit = serializers.IntegerField(
        required=False,
        default=MESSAGES_PAGE_DEFAULT,
        min_value=1,
        max_value=MESSAGES_PAGE_MAX,
        help_text="How many messages to return, oldest first.",
    )
    messages_cursor = serializers.CharField(
        required=False, max_length=200, help_text="The `messages_next` of the previous page."
    )


class UsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class MessageSerializer(serializers.Serializer):
    id = serializers.CharField()
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    created_at = serializers.DateTimeField()
    status = serializers.ChoiceField(
        choices=["complete", "cancelled", "incomplete"],
        help_text="`cancelled` or `incomplete` mark a streamed reply cut short after part of it was delivered.",
    )


class SessionSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["active", "ended", "archived"])
    model = serializers.CharField()
    system_prompt = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    last_activity_at = serializers.DateTimeField()
    message_count = serializers.IntegerField()
    usage = UsageSerializer()
    metadata = serializers.JSONField()


class SessionDetailSerializer(SessionSerializer):
    messages = MessageSerializer(many=True, help_text="A page of the messages, oldest first (`messages_limit`).")
    messages_next = serializers.CharField(
        allow_null=True, help_text="Pass as `messages_cursor` for the next messages; null when there are no more."
    )


class SessionPageSerializer(serializers.Serializer):
    results = SessionSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="Pass as `cursor` for the next page; null on the last.")


# Documentation only: `turn_input.parse_turn` reads the body (it is the hot path).
class TurnRequestSerializer(serializers.Serializer):
    content = serializers.CharField(trim_whitespace=False)
    # null is the same as leaving a parameter out, as OpenAI-style clients send it.
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    stop = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=4)
    stream = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="Answer with Server-Sent Events (`delta`, then `done` or `error`). Unset or null: "
        "streams when the Accept header asks only for text/event-stream.",
    )


class TurnResponseSerializer(serializers.Serializer):
    user_message = MessageSerializer()
    message = MessageSerializer()
    usage = UsageSerializer()
    finish_reason = serializers.ChoiceField(choices=["stop", "length", "content_filter"])
