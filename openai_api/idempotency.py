"""Idempotency-Key on the `/v1/` turns that store nothing: Chat Completions and `store: false` responses.

The semantics are the native API's, run by the turn pipeline (`StatelessRequest.idempotent`):
the same key with the same request from the same owner, within `IDEMPOTENCY_TTL_SECONDS`,
gets the first answer back without a model call; with another request it is
`idempotency_key_reused` (422); while the first still runs, `idempotency_in_progress` (409,
which the SDK retries); another owner's key is another key. The key's record keeps the
answer (user content), so the owner's export lists it and their erasure removes it.

Streaming: whether a request streams is how the answer is shown, not what is asked, so it is
no part of the fingerprint. A streamed request takes the key like a whole one; once the
model finished, the key keeps the answer, and a repeat (streamed or not) gets it back at
once: streamed, as one delta between the usual opening and closing events. A stream that
failed or that the client left releases the key, so a retry asks the model again.

This module is the edge's part: which parts of a request make it the same request, and the
ids a repeat shows again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sessions_app.public import IdempotentRequest

PRESENTATION_ONLY = frozenset({"stream", "stream_options"})


def idempotent_request(header: str | None, kind: str, body: Mapping[str, Any]) -> IdempotentRequest | None:
    """The request as its Idempotency-Key's fingerprint sees it: the whole body but how it is
    shown (`stream`, `stream_options`). A malformed key is refused (`InvalidRequest`)."""
    return IdempotentRequest.of(header, kind, {k: v for k, v in body.items() if k not in PRESENTATION_ONLY})


def stable_id(kind: str, owner: str, key: str, *, length: int = 32) -> str:
    """An id that every repeat of the owner's key shows again (hex; another owner's differs)."""
    digest = hashlib.sha256(kind.encode() + b"\0" + owner.encode() + b"\0" + key.encode())
    return digest.hexdigest()[:length]
