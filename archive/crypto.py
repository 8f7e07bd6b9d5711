"""Envelope encryption of archived sessions: compress, then AES-256-GCM under a data key.

An archived object is `LSGA | version | header length | header JSON | nonce | ciphertext`.
The header names the data key (`kid`), so keys can rotate, and it is authenticated
together with the object's owner and session id: an object cannot be swapped for
another or moved to another owner without failing to decrypt.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

MAGIC = b"LSGA"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12


class UnreadableArchive(Exception):
    """The object is corrupt, was moved, or its data key is gone (crypto-shredded)."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def wrap_key(data_key: bytes, kek: bytes) -> bytes:
    return aes_key_wrap(kek, data_key)


def unwrap_key(wrapped: bytes, kek: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap as exc:
        raise UnreadableArchive("the data key does not unwrap with its key-encryption key") from exc


def seal(plaintext: bytes, *, key: bytes, key_id: str, context: bytes) -> bytes:
    """Compress and encrypt `plaintext`; `context` (owner and session id) is bound to it."""
    header = orjson.dumps({"kid": key_id, "alg": "A256GCM", "zip": "zlib"})
    prefix = MAGIC + struct.pack(">BH", VERSION, len(header)) + header
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, zlib.compress(plaintext, 6), prefix + context)
    return prefix + nonce + ciphertext


def header_of(blob: bytes) -> dict[str, Any]:
    if len(blob) < 7 or blob[:4] != MAGIC:
        raise UnreadableArchive("not an archived session")
    version, length = struct.unpack(">BH", blob[4:7])
    if version != VERSION:
        raise UnreadableArchive(f"unknown archive version {version}")
    header: dict[str, Any] = orjson.loads(blob[7 : 7 + length])
    return header


def open_sealed(blob: bytes, *, key: bytes, context: bytes) -> bytes:
    header_of(blob)  # checks the magic and version
    split = 7 + struct.unpack(">BH", blob[4:7])[1]
    prefix, nonce, ciphertext = blob[:split], blob[split : split + NONCE_BYTES], blob[split + NONCE_BYTES :]
    try:
        return zlib.decompress(AESGCM(key).decrypt(nonce, ciphertext, prefix + context))
    except (InvalidTag, zlib.error) as exc:
        raise UnreadableArchive("the object does not decrypt") from exc
