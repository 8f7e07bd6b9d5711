"""Reading JSON request bodies with bounds: valid UTF-8, an object at the top, a limited depth.

orjson refuses invalid UTF-8 and lone surrogates itself. The depth is checked on
the raw bytes *before* parsing: orjson has crashed the process (not an exception, a
segfault) on arrays nested ~100,000 deep, which fits in a 256 KiB body. The check
runs on the event loop for every frame and body, so it is linear and made of C
loops: bytes methods and one regular expression that never backtracks (a 256 KiB
body of the worst kinds takes ~30 ms on the 2-core test machine; the regex that
stripped strings before took minutes, quadratic in the escaped quotes).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.parsers import BaseParser

from core.errors import InvalidRequest, PayloadTooLarge

# Arrays and objects as ( and ), everything else dropped: only the nesting is left.
_NESTING = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
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
    """Whether arrays and objects nest deeper than `limit`, brackets inside strings aside.

    Exact on valid JSON; on invalid JSON it may say yes where orjson would stop at
    the error first (both answer 400), never no where orjson would nest deeper.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to matter, no scan
    if b"\\" in raw:
        # Escaped backslashes go first, so that what is left of a run escapes the quote after it.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in raw:
        raw = b"".join(raw.split(b'"')[::2])  # every other piece is inside a string (the last may be open)
    nesting = raw.translate(_NESTING, _NOT_BRACKET)
    opens = nesting.count(b"(")
    if opens <= limit:
        return False
    # Close whatever is left open (a truncated body nests as deep as it got), then match the
    # longest prefix made of pairs at most `limit` deep: it stops at an unmatched `)` (where
    # orjson would stop too) or at the `(` of a pair that nests deeper.
    nesting += b")" * opens
    matched = _balanced(limit).match(nesting)
    end = matched.end() if matched else 0
    return nesting[end : end + 1] == b"("


@lru_cache(maxsize=4)
def _balanced(limit: int) -> re.Pattern[bytes]:
    """Pairs of ( and ) nested at most `limit` deep; possessive, so matching never backtracks."""
    pattern = b""
    for _ in range(limit):
        pattern = rb"(?:\(" + pattern + rb"\))*+"
    return re.compile(pattern)


class BoundedJSONParser(BaseParser):
    """DRF's JSON parser, with the same bounds as the streaming endpoints."""

    media_type = "application/json"

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.MAX_REQUEST_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge()
        return loads_object(body)
