"""Reading JSON request bodies with bounds: valid UTF-8, an object at the top, a limited depth.

orjson refuses invalid UTF-8 and lone surrogates itself. The depth is checked on
the raw bytes *before* parsing: orjson crashes the process (not an exception, a
segfault) on arrays nested ~100,000 deep, which fits in a 256 KiB body.
"""

from __future__ import annotations

import re
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.parsers import BaseParser

from core.errors import InvalidRequest, PayloadTooLarge

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
# C0 controls other than tab, line feed and carriage return, and DEL: never part of a message.
# A regex character range, valid in Python and ECMA-262 alike (the OpenAPI schema documents it).
CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def max_depth() -> int:
    return int(getattr(settings, "MAX_JSON_DEPTH", 32))


def loads_object(body: bytes | str) -> dict[str, Any]:
    """The body as a JSON object, or `400 invalid_request` saying what is wrong with it."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if _nests_deeper(raw, max_depth()):
        raise InvalidRequest(f"The body nests JSON more than {max_depth()} levels deep.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower() or "surrogate" in str(exc).lower():
            raise InvalidRequest("The body is not valid UTF-8.") from exc
        raise InvalidRequest("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _nests_deeper(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit`, brackets inside strings aside."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to matter, no scan
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


class BoundedJSONParser(BaseParser):
    """DRF's JSON parser, with the same bounds as the streaming endpoints."""

    media_type = "application/json"

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.MAX_REQUEST_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge()
        return loads_object(body)
