"""Who is calling: a pseudonymous owner and the scopes their token grants."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import ClassVar

READ_SCOPE = "chat.read"
WRITE_SCOPE = "chat.write"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. Carries no raw subject: `owner` is a keyed pseudonym."""

    owner: str
    scopes: frozenset[str]
    expires_at: int

    # DRF and Django treat anything with this flag as a signed-in user.
    is_authenticated: ClassVar[bool] = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def owner_pseudonym(*, secret: bytes, issuer: str, subject: str) -> str:
    """A stable pseudonym for (issuer, subject); without the secret it cannot be reversed or linked."""
    digest = hmac.new(secret, issuer.encode() + b"\x00" + subject.encode(), hashlib.sha256)
    return "o_" + digest.hexdigest()[:40]
