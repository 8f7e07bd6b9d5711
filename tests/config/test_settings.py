"""Settings by environment: production refuses to start without its secrets and passes the deploy check."""

from __future__ import annotations

import base64
import os
import re
import secrets
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
    "SECRET_KEY": secrets.token_urlsafe(48),
    "OWNER_PSEUDONYM_SECRET": secrets.token_urlsafe(48),
    "DATABASE_URL": "postgres://gateway:secret@db.internal:5432/gateway",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "ALLOWED_HOSTS": "gateway.example.com",
    "JWT_ISSUER": "https://tenant.b2clogin.com/tenant-id/v2.0/",
    "JWT_JWKS_URL": "https://tenant.b2clogin.com/tenant.onmicrosoft.com/b2c_1_signin/discovery/v2.0/keys",
    "JWT_AUDIENCE": "api-client-id",
    "ARCHIVE_KEKS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
    "METRICS_TOKEN": secrets.token_urlsafe(32),
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


WEAK_SECRET = "correct-horse-battery-staple-" * 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ARCHIVE_KEKS", ""),  # would seal archives under a key on one container's disk
        ("ARCHIVE_KEKS", " , "),
        ("ARCHIVE_KEKS", "k1:not-base64!"),
        ("ARCHIVE_KEKS", "k1:" + base64.b64encode(os.urandom(16)).decode()),
        ("ARCHIVE_KEKS", "k1:" + base64.b64encode(bytes(32)).decode()),
        ("ARCHIVE_ACTIVE_KEK", "k9"),
        ("SECRET_KEY", "a" * 64),
        ("SECRET_KEY", WEAK_SECRET),
        ("SECRET_KEY", secrets.token_urlsafe(30)),  # 40 characters
        ("OWNER_PSEUDONYM_SECRET", "abcdefgh" * 8),
        ("OWNER_PSEUDONYM_SECRET", "dev-only-owner-pseudonym-secret" + secrets.token_urlsafe(32)),
        ("METRICS_TOKEN", "metrics-token"),
        ("METRICS_TOKEN", "metrics" * 6),
        ("ALLOWED_HOSTS", "*"),
        ("ALLOWED_HOSTS", "gateway.example.com,*"),
        ("JWT_ALGORITHMS", "HS256"),
        ("JWT_ALGORITHMS", "RS256,none"),
        ("JWT_ALGORITHMS", ","),
    ],
)
def test_production_refuses_dangerous_configuration(name: str, value: str) -> None:
    result = manage("check", env=PRODUCTION | {name: value})

    assert result.returncode != 0, f"{name}={value!r} was accepted"
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr, result.stderr[-2000:]


def test_production_admin_oidc_needs_its_issuer() -> None:
    oidc = {"ADMIN_OIDC_CLIENT_ID": "gateway-admin", "ADMIN_OIDC_CLIENT_SECRET": secrets.token_urlsafe(32)}

    refused = manage("check", env=PRODUCTION | oidc)
    accepted = manage("check", env=PRODUCTION | oidc | {"ADMIN_OIDC_ISSUER": "https://login.example.com/tenant/v2.0"})

    assert refused.returncode != 0 and "ADMIN_OIDC_ISSUER" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr[-2000:]


def test_secret_strength_is_judged_by_length_and_variety() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management.utils import get_random_secret_key

    from config.settings.safety import require_strong_secret

    for _ in range(200):  # what the docs tell people to generate always passes
        for value in (secrets.token_urlsafe(48), secrets.token_hex(32), get_random_secret_key()):
            require_strong_secret("SECRET_KEY", value, min_length=50, min_bits=128)
        for value in (secrets.token_urlsafe(32), secrets.token_hex(16)):
            require_strong_secret("METRICS_TOKEN", value, min_length=32, min_bits=64)
    for weak in ("x" * 80, "ab" * 40, WEAK_SECRET, "0123456789" * 6):
        with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
            require_strong_secret("SECRET_KEY", weak, min_length=50, min_bits=128)


def test_the_compose_stack_runs_the_production_settings() -> None:
    """docker-compose.yml's gateways, scheduler and migrations run config.settings.production with
    its development secrets spelled out, and production accepts them; nothing turns DEV_MODE on."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^DEV_MODE=0$", example, re.MULTILINE)
    assert re.search(r"^DJANGO_SETTINGS_MODULE=config.settings.production$", example, re.MULTILINE)
    for name in ("gateway-1", "gateway-2", "scheduler", "migrate"):
        environment = compose["services"][name]["environment"]
        assert environment["DJANGO_SETTINGS_MODULE"] == "config.settings.production", name
        assert environment.get("DEV_MODE", "0") == "0", name
    # Compose's ${VAR:-default} with nothing set is the default; ${VAR:?...} must come from .env.
    given = {"JWT_ISSUER": PRODUCTION["JWT_ISSUER"], "JWT_JWKS_URL": PRODUCTION["JWT_JWKS_URL"], "JWT_AUDIENCE": "x"}

    def resolve(value: str) -> str:
        match = re.fullmatch(r"\$\{(\w+):([-?])(.*)\}", value)
        if not match:
            return value
        return match.group(3) if match.group(2) == "-" else given[match.group(1)]

    env = {k: resolve(str(v)) for k, v in compose["services"]["gateway-1"]["environment"].items()}
    result = manage("check", env=env)

    assert result.returncode == 0, result.stderr[-2000:]


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


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"TURN_LOCK_SECONDS": "100"}, "sessions_app.E001"),  # under BACKEND_TIMEOUT_SECONDS (120)
        ({"BACKEND_TARGETS": "a:1,b:2,c:3"}, "sessions_app.E001"),  # 3 servers x 120 s > 330
        ({"TURN_LOCK_SECONDS": "240", "BACKEND_FIRST_DELTA_TIMEOUT_SECONDS": "250"}, "sessions_app.E001"),
        ({"TURN_LOCK_SECONDS": "150", "BACKEND_SILENCE_TIMEOUT_SECONDS": "110"}, "sessions_app.E002"),
    ],
)
def test_a_turn_lock_shorter_than_the_backend_deadlines_is_refused(env: dict[str, str], code: str) -> None:
    result = manage("check", env=env)

    assert result.returncode != 0 and code in result.stderr, result.stderr[-2000:]


def test_the_default_turn_lock_outlasts_the_default_deadlines() -> None:
    result = manage("check", env={"BACKEND_TARGETS": "a:1,b:2", "TURN_LOCK_SECONDS": "300"})

    assert result.returncode == 0, result.stderr[-2000:]
