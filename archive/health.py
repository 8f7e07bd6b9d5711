"""Readiness of the archive store: reachable, and the container in place."""

from archive.wiring import get_archive_store


async def check_archive() -> None:
    store = get_archive_store()
    await store.start()
    await store.list_by_owner("readiness-probe")
