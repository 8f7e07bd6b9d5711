"""`ArchiveSessionStore` on Azure Blob Storage, one block blob per session in the cool tier."""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings, StandardBlobTier, StorageErrorCode
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, ExponentialRetry

from archive.errors import ArchiveUnavailable
from archive.ports import object_name, owner_prefix
from core.per_loop import PerLoop

P = ParamSpec("P")
T = TypeVar("T")
CONTENT_TYPE = "application/vnd.llm-gateway.session+lsga"


def _archive_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Blob storage still failing after the SDK's own retries is a 503, not a 500."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except AzureError as exc:
            raise ArchiveUnavailable() from exc

    return wrapper


class ShortExponentialRetry(ExponentialRetry):
    """The SDK's retry policy, backing off from a fraction of a second (`backoff`, then twice
    that, ...) instead of its default 15 s, then 18 s, then 24 s.

    With the default, a Blob outage held every caller for over a minute per call before the
    503: a client ending a session or reading an archived one, and an archive pass, once for
    each session it tried.
    """

    def __init__(self, *, retry_total: int, backoff: float) -> None:
        super().__init__(retry_total=retry_total)
        self._backoff = backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not a secret
        return float(self._backoff * 2 ** settings["count"] * jitter)


class AzureBlobArchiveStore:
    """Either a connection string (Azurite, shared key) or an account URL with
    `DefaultAzureCredential` (managed identity, workload identity) in production."""

    def __init__(
        self,
        *,
        container: str,
        connection_string: str = "",
        account_url: str = "",
        retry_total: int = 3,
        retry_backoff: float = 0.5,
        connection_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if not connection_string and not account_url:
            raise ValueError("AzureBlobArchiveStore needs a connection string or an account URL")
        self._container = container
        self._connection_string = connection_string
        self._account_url = account_url
        self._options: dict[str, Any] = {
            "retry_policy": ShortExponentialRetry(retry_total=retry_total, backoff=retry_backoff),
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
        }
        self._clients = PerLoop(self._open_clients, _close_clients)
        self._started = False

    def _open_clients(self) -> tuple[Any, BlobServiceClient, ContainerClient]:
        options = self._options
        if self._connection_string:
            service = BlobServiceClient.from_connection_string(self._connection_string, **options)
            credential = None
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            service = BlobServiceClient(self._account_url, credential=credential, **options)
        return credential, service, service.get_container_client(self._container)

    def _client(self) -> ContainerClient:
        return self._clients()[2]

    @_archive_errors
    async def start(self) -> None:
        """Create the container, once per process (at start-up, or else before first use)."""
        if self._started:
            return
        with contextlib.suppress(ResourceExistsError):
            await self._client().create_container()
        self._started = True

    @_archive_errors
    async def put(self, owner: str, session_id: str, data: bytes) -> str:
        await self.start()
        name = object_name(owner, session_id)
        try:
            await self._upload(name, data)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != StorageErrorCode.CONTAINER_NOT_FOUND:
                raise
            # Deleted behind our back (or a storage emulator restarted empty): make it again.
            with contextlib.suppress(ResourceExistsError):
                await self._client().create_container()
            await self._upload(name, data)
        return name

    async def _upload(self, name: str, data: bytes) -> None:
        await self._client().upload_blob(
            name,
            data,
            overwrite=True,
            standard_blob_tier=StandardBlobTier.COOL,
            content_settings=ContentSettings(content_type=CONTENT_TYPE),
            metadata={"format": "lsga1"},  # never content, nor who it belongs to
        )

    @_archive_errors
    async def get(self, owner: str, session_id: str) -> bytes | None:
        await self.start()
        try:
            downloader = await self._client().download_blob(object_name(owner, session_id))
        except ResourceNotFoundError:
            return None
        return bytes(await downloader.readall())

    @_archive_errors
    async def list_by_owner(self, owner: str) -> list[str]:
        await self.start()
        prefix = owner_prefix(owner)
        try:
            names = [blob.name async for blob in self._client().list_blobs(name_starts_with=prefix)]
        except ResourceNotFoundError:
            return []  # no container: nothing archived
        return sorted(n[len(prefix) :].removesuffix(".lsga") for n in names)

    @_archive_errors
    async def delete(self, owner: str, session_id: str) -> bool:
        await self.start()
        try:
            await self._client().delete_blob(object_name(owner, session_id), delete_snapshots="include")
        except ResourceNotFoundError:
            return False
        return True

    @_archive_errors
    async def delete_by_owner(self, owner: str) -> int:
        deleted = 0
        for session_id in await self.list_by_owner(owner):
            deleted += await self.delete(owner, session_id)
        return deleted

    async def close(self) -> None:
        await self._clients.close()


async def _close_clients(entry: tuple[Any, BlobServiceClient, ContainerClient]) -> None:
    credential, service, container = entry
    await container.close()
    await service.close()
    if credential is not None:
        await credential.close()
