"""Settings by environment: production refuses to start without its secrets and passes the deploy check."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "k" * 20 + "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1" + "z" * 10,
    "OWNER_PSEUDONYM_SECRET": "p" * 20 + "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8" + "q" * 10,
    "DATABASE_URL": "postgres://gateway:secret@db.internal:5432/gateway",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "ALLOWED_HOSTS": "gateway.example.com",
    "JWT_ISSUER": "https://tenant.b2clogin.com/tenant-id/v2.0/",
    "JWT_JWKS_URL": "https://tenant.b2clogin.com/tenant.onmicrosoft.com/b2c_1_signin/discovery/v2.0/keys",
    "JWT_AUDIENCE": "api-client-id",
    "ARCHIVE_KEKS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
    "METRICS_TOKEN": "metrics-" + base64.b64encode(os.urandom(16)).decode(),
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(("DEV_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_the_deploy_check() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "missing",
    [
        "SECRET_KEY",
        "OWNER_PSEUDONYM_SECRET",
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_ISSUER",
        "ARCHIVE_KEKS",
        "METRICS_TOKEN",
    ],
)
def test_production_refuses_to_start_without_a_secret(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != missing}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_refuses_the_development_defaults() -> None:
    result = manage(
        "check", env=PRODUCTION | {"SECRET_KEY": "dev-only-insecure-secret-key-change-me-for-any-shared-deployment"}
    )

    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_production_never_issues_development_tokens() -> None:
    result = manage("mint_dev_token", "--sub", "alice", env=PRODUCTION | {"DEV_MODE": "1"})

    assert result.returncode != 0
    assert "Development mode is off" in result.stderr
    assert result.stdout == ""


def test_mint_dev_token_prints_only_a_token(tmp_path: Path) -> None:
    result = manage(
        "mint_dev_token",
        "--sub",
        "alice",
        "--scope",
        "chat.read",
        "--ttl",
        "60",
        env={"DEV_SIGNING_KEY_PATH": str(tmp_path / "k.pem")},
    )

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.count(".") == 2 and " " not in token


@pytest.mark.django_db
def test_migrations_are_complete_and_the_local_admin_works() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    get_user_model().objects.create_superuser("auditor", "auditor@example.com", "pw-for-tests")
    client = Client()

    assert client.login(username="auditor", password="pw-for-tests")
    assert client.get("/admin/").status_code == 200


def test_redis_url_also_backs_djangos_cache(redis_url: str, redis_prefix: str) -> None:
    import redis

    result = manage(
        "shell",
        "-c",
        "from django.core.cache import cache; cache.set('probe', 'yes', 60); print(cache.get('probe'))",
        env={"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "yes"
    assert list(redis.Redis.from_url(redis_url).scan_iter(match=f"{redis_prefix}:cache:*"))


def test_a_session_ttl_shorter_than_the_archive_threshold_is_refused() -> None:
    result = manage("check", env={"SESSION_TTL_SECONDS": "3600", "ARCHIVE_IDLE_SECONDS": "3600"})

    assert result.returncode != 0 and "archive.E001" in result.stderr
    assert manage("check", env={"SESSION_TTL_SECONDS": "86400", "ARCHIVE_IDLE_SECONDS": "3600"}).returncode == 0
