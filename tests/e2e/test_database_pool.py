"""PostgreSQL under load: the gateway's sync routes share one pool, not a connection per request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.e2e.conftest import ROOT, Gateway, StartGateway

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
POOL = 4


@pytest.fixture
def database() -> Iterator[str]:
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (the suite runs on SQLite)")
    name = f"gwpool_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def connections(name: str) -> int:
    with psycopg.connect(SERVER, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def test_concurrent_requests_on_the_sync_routes_hold_no_more_connections_than_the_pool(
    start_gateway: StartGateway, model_server: str, database: str
) -> None:
    url = f"postgres://postgres@127.0.0.1:5432/{database}"
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    gateway: Gateway = start_gateway(model_server, DATABASE_URL=url, DATABASE_POOL_MAX=str(POOL))
    headers = {"Authorization": f"Bearer {gateway.dev_token('pool-owner')}"}

    async def drive() -> list[int]:
        async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=60) as client:
            ids = [(await client.post("/api/v1/sessions", json={})).json()["id"] for _ in range(30)]
            # Ending a session is one of the routes Django serves on a thread per request.
            ended = await asyncio.gather(*(client.post(f"/api/v1/sessions/{i}/end") for i in ids))
            return [r.status_code for r in ended]

    codes = asyncio.run(drive())
    assert codes == [200] * 30  # a burst waits for a pooled connection rather than failing
    held = connections(database)
    # Unpooled, every request's thread kept its own connection open: 30 and more.
    assert 1 <= held <= POOL, held
    gateway.process.stop()
