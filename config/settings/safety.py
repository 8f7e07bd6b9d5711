"""What production refuses to start with: weak secrets, a missing or malformed KEK list, a
wildcard host, JWT algorithms the verifier refuses. Pure functions, so tests call them directly."""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

KEK_BYTES = 32
# Markers of the development defaults and of the placeholders people paste from docs.
_PLACEHOLDERS = ("dev-only", "change-me", "changeme", "insecure", "example", "secret-key")


def estimated_bits(value: str) -> float:
    """A rough estimate of the entropy in `value`: the Shannon entropy of its characters times
    the number of distinct character pairs in it. Random keys score near their true entropy;
    repeated or patterned ones ("aaaa...", "abcdabcd...") score low, which is all the check
    needs."""
    if len(value) < 2:
        return 0.0
    counts = Counter(value)
    per_char = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    pairs = len({value[i : i + 2] for i in range(len(value) - 1)})
    return per_char * (pairs + 1)


def require_strong_secret(name: str, value: str, *, min_length: int, min_bits: float) -> None:
    """Refuse `value` unless it is long, varied and not a known placeholder."""
    problem = ""
    if len(value) < min_length:
        problem = f"at least {min_length} characters"
    elif any(marker in value.lower() for marker in _PLACEHOLDERS):
        problem = "not a development default or placeholder"
    elif estimated_bits(value) < min_bits:
        problem = f"random (about {min_bits:.0f} bits or more; this looks patterned)"
    if problem:
        raise ImproperlyConfigured(
            f"{name} must be {problem}: generate one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(48))"`.'
        )


def require_keks(spec: str, active: str) -> None:
    """The KEK list is present, well formed, and holds the active KEK: with none, archives
    would be sealed under a key made on one container's disk, different per replica and lost
    with the container."""
    # The same rules as archive.keys.parse_keks, which cannot be imported before the apps load.
    keks: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kek_id, sep, encoded = item.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            key = b""
        if not sep or not kek_id or len(key) != KEK_BYTES:
            raise ImproperlyConfigured(f"ARCHIVE_KEKS: '{kek_id}' must be id:<base64 of 32 random bytes>.")
        keks[kek_id] = key
    if not keks:
        raise ImproperlyConfigured("ARCHIVE_KEKS must list at least one key: id:<base64 of 32 random bytes>.")
    if active and active not in keks:
        raise ImproperlyConfigured(f"ARCHIVE_ACTIVE_KEK '{active}' is not among ARCHIVE_KEKS.")
    for kek_id, key in keks.items():
        if len(set(key)) < 16:  # 32 random bytes practically never repeat this much
            raise ImproperlyConfigured(f"ARCHIVE_KEKS: key '{kek_id}' is not random bytes.")


def require_hosts(hosts: Iterable[str]) -> None:
    hosts = list(hosts)
    if not hosts or any(not host.strip() or host.strip() == "*" for host in hosts):
        raise ImproperlyConfigured("ALLOWED_HOSTS must name the gateway's hosts: '*' or an empty entry is refused.")


def require_algorithms(algorithms: Iterable[str]) -> None:
    """Algorithms the token verifier accepts (asymmetric only); an empty list would refuse every token."""
    from core.auth.tokens import ALLOWED_ALGORITHMS

    algorithms = [a.strip() for a in algorithms]
    refused = sorted(set(algorithms) - ALLOWED_ALGORITHMS)
    if not algorithms or refused:
        raise ImproperlyConfigured(
            f"JWT_ALGORITHMS must be a non-empty list from {sorted(ALLOWED_ALGORITHMS)}"
            + (f"; refused: {refused}" if refused else "")
        )
