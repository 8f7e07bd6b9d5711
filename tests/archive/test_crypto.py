"""Envelope encryption of archived sessions, and key handling."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.exceptions import ImproperlyConfigured

from archive import crypto
from archive.keys import KeyRing, parse_keks

PLAIN = b'{"messages": ["hello, secret canary 7f3a"]}' * 20


def test_sealed_objects_round_trip_and_hide_their_content() -> None:
    key = crypto.new_data_key()

    sealed = crypto.seal(PLAIN, key=key, key_id="kid-1", context=b"owner\x00session")

    assert b"canary" not in sealed and crypto.header_of(sealed)["kid"] == "kid-1"
    assert len(sealed) < len(PLAIN)  # compressed before encryption
    assert crypto.open_sealed(sealed, key=key, context=b"owner\x00session") == PLAIN


@pytest.mark.parametrize("context", [b"other\x00session", b"owner\x00other"])
def test_an_object_moved_to_another_owner_or_session_does_not_open(context: bytes) -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal(PLAIN, key=key, key_id="k", context=b"owner\x00session")

    with pytest.raises(crypto.UnreadableArchive):
        crypto.open_sealed(sealed, key=key, context=context)


def test_a_tampered_object_or_the_wrong_key_does_not_open() -> None:
    key = crypto.new_data_key()
    sealed = bytearray(crypto.seal(PLAIN, key=key, key_id="k", context=b"c"))
    sealed[-5] ^= 1

    with pytest.raises(crypto.UnreadableArchive):
        crypto.open_sealed(bytes(sealed), key=key, context=b"c")
    with pytest.raises(crypto.UnreadableArchive):
        crypto.open_sealed(
            crypto.seal(PLAIN, key=key, key_id="k", context=b"c"), key=crypto.new_data_key(), context=b"c"
        )
    with pytest.raises(crypto.UnreadableArchive):
        crypto.header_of(b"not an archive")


def test_wrapped_keys_unwrap_only_with_their_kek() -> None:
    data_key, kek = crypto.new_data_key(), os.urandom(32)
    wrapped = crypto.wrap_key(data_key, kek)

    assert crypto.unwrap_key(wrapped, kek) == data_key
    with pytest.raises(crypto.UnreadableArchive):
        crypto.unwrap_key(wrapped, os.urandom(32))


def test_kek_settings_are_validated() -> None:
    good = base64.b64encode(os.urandom(32)).decode()

    assert parse_keks(f"a:{good}, b:{good}") == {"a": base64.b64decode(good), "b": base64.b64decode(good)}
    for bad in (f"nocolon{good}", "a:not-base64!", f"a:{base64.b64encode(b'short').decode()}"):
        with pytest.raises(ImproperlyConfigured):
            parse_keks(bad)
    with pytest.raises(ImproperlyConfigured):
        KeyRing(keks={"a": os.urandom(32)}, active_kek="b")


@pytest.mark.django_db(transaction=True)
async def test_an_owner_has_one_data_key_until_it_is_destroyed() -> None:
    ring = KeyRing(keks={"k1": os.urandom(32)}, active_kek="k1")

    key_id, key = await ring.key_for("o_alice")
    again_id, again = await ring.key_for("o_alice")
    other_id, _ = await ring.key_for("o_bob")

    assert (key_id, key) == (again_id, again) and other_id != key_id and len(key) == 32
    assert await ring.key_by_id(key_id) == key
    assert await ring.destroy("o_alice") is True
    assert await ring.key_by_id(key_id) is None
    assert await ring.destroy("o_alice") is False
    assert (await ring.key_for("o_alice"))[0] != key_id  # a new owner key, not the old one


@pytest.mark.django_db(transaction=True)
async def test_rotating_the_kek_rewraps_keys_without_changing_them() -> None:
    old, new = os.urandom(32), os.urandom(32)
    key_id, key = await KeyRing(keks={"old": old}, active_kek="old").key_for("o_alice")
    rotated = KeyRing(keks={"old": old, "new": new}, active_kek="new")

    assert await rotated.rewrap() == 1
    assert await rotated.rewrap() == 0
    assert await KeyRing(keks={"new": new}, active_kek="new").key_by_id(key_id) == key
