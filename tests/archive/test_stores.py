"""The `ArchiveSessionStore` contract on every adapter: in memory, a directory, and Azurite."""

from __future__ import annotations

import io

import pytest

from archive.ports import ArchiveSessionStore
from archive.stores.azure_blob import CONTENT_TYPE, AzureBlobArchiveStore


async def test_put_get_overwrite(archive_store: ArchiveSessionStore) -> None:
    name = await archive_store.put("o_alice", "s1", b"first")
    await archive_store.put("o_alice", "s1", b"second")

    assert name == "owners/o_alice/sessions/s1.lsga"
    assert await archive_store.get("o_alice", "s1") == b"second"
    assert await archive_store.get("o_alice", "missing") is None
    assert await archive_store.get("o_bob", "s1") is None


async def test_listing_and_deleting_stay_within_one_owner(archive_store: ArchiveSessionStore) -> None:
    for session_id in ("s1", "s2", "s3"):
        await archive_store.put("o_alice", session_id, b"x")
    await archive_store.put("o_bob", "s9", b"y")

    assert await archive_store.list_by_owner("o_alice") == ["s1", "s2", "s3"]
    assert await archive_store.delete("o_alice", "s2") is True
    assert await archive_store.delete("o_alice", "s2") is False
    assert await archive_store.delete_by_owner("o_alice") == 2
    assert await archive_store.list_by_owner("o_alice") == []
    assert await archive_store.get("o_bob", "s9") == b"y"


async def test_blobs_go_to_the_cool_tier_without_content_in_their_metadata(blob_store: AzureBlobArchiveStore) -> None:
    await blob_store.put("o_alice", "s1", b"sealed bytes")

    properties = await blob_store._client().get_blob_client("owners/o_alice/sessions/s1.lsga").get_blob_properties()

    assert properties.blob_tier == "Cool"
    assert properties.content_settings.content_type == CONTENT_TYPE
    assert properties.metadata == {"format": "lsga1"}


async def test_the_container_is_created_once(azurite: str) -> None:
    store = AzureBlobArchiveStore(container="once-only", connection_string=azurite)
    await store.start()
    await store.start()  # a second start is harmless
    await store.put("o", "s", b"x")
    other_process = AzureBlobArchiveStore(container="once-only", connection_string=azurite)

    await other_process.start()  # the container exists already: no error

    assert await other_process.get("o", "s") == b"x"
    await store.close()
    await other_process.close()


async def test_a_container_deleted_behind_its_back_is_made_again(azurite: str) -> None:
    from azure.storage.blob.aio import BlobServiceClient

    store = AzureBlobArchiveStore(container="vanishing", connection_string=azurite)
    await store.put("o", "s1", b"x")
    async with BlobServiceClient.from_connection_string(azurite) as service:
        await service.delete_container("vanishing")

    assert await store.list_by_owner("o") == []  # nothing archived, not an error
    await store.put("o", "s2", b"y")

    assert await store.get("o", "s2") == b"y"
    assert await store.list_by_owner("o") == ["s2"]
    await store.close()


async def test_unreachable_blob_storage_is_archive_unavailable() -> None:
    from archive.errors import ArchiveUnavailable
    from tests.support import free_port

    store = AzureBlobArchiveStore(
        container="x",
        connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Zm9v;"
            f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
        ),
        retry_total=0,
    )
    with pytest.raises(ArchiveUnavailable):
        await store.put("o", "s", b"x")
    await store.close()


def test_blob_retries_back_off_from_a_fraction_of_a_second() -> None:
    """Not the SDK's default 15 s, 18 s, 24 s, which kept a client waiting over a minute per
    call while Blob storage was down."""
    from archive.stores.azure_blob import ShortExponentialRetry

    policy = ShortExponentialRetry(retry_total=3, backoff=0.5)

    waits = [policy.get_backoff_time({"count": count}) for count in range(3)]
    assert 0.4 <= waits[0] <= 0.6 and 0.8 <= waits[1] <= 1.2 and 1.6 <= waits[2] <= 2.4
    assert policy.total_retries == 3


async def test_blob_requests_are_not_logged_with_the_owner_in_their_address(
    blob_store: AzureBlobArchiveStore, captured_logs: io.StringIO
) -> None:
    # azure.core logs each request's URL and headers at INFO; a blob's name has its owner's id.
    await blob_store.put("o_carol", "s1", b"sealed bytes")
    await blob_store.get("o_carol", "s1")

    assert "o_carol" not in captured_logs.getvalue()
