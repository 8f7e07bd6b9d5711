"""The admin's password sign-in locks out a name, and a client, after repeated failures; the
counts are shared through Redis; a lockout tells nothing about which accounts exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from core.admin_login import LOCKED_MESSAGE
from tests.support import ROOT, redis_caches

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared_cache(settings: SettingsWrapper, redis_url: str, redis_prefix: str) -> str:
    """Django's cache on the real Redis, as production has it, under the test's own prefix."""
    settings.CACHES = redis_caches(redis_url, redis_prefix)
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    settings.ADMIN_LOGIN_MAX_FAILURES_PER_CLIENT = 8
    settings.ADMIN_LOGIN_LOCKOUT_SECONDS = 600
    get_user_model().objects.create_superuser("root", "root@example.com", "right-password")
    return redis_prefix


def attempt(client: Client, username: str, password: str) -> tuple[int, str, bool]:
    """(status, page, signed in) of one sign-in through the admin's form."""
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return response.status_code, response.content.decode(), "_auth_user_id" in client.session


def errors(page: str) -> list[str]:
    return re.findall(r'<p class="errornote">\s*(.*?)\s*</p>|<ul class="errorlist[^"]*">(.*?)</ul>', page, re.S)


@pytest.mark.usefixtures("shared_cache")
def test_a_name_is_locked_out_after_repeated_failures_whether_or_not_it_exists() -> None:
    client = Client(REMOTE_ADDR="192.0.2.1")
    for name in ("root", "ghost"):
        for _ in range(3):
            status, page, signed_in = attempt(client, name, "wrong")
            assert status == 200 and not signed_in and LOCKED_MESSAGE not in page

    # Locked: the right password does not sign in, and a real and a made-up name read alike.
    real = attempt(Client(REMOTE_ADDR="192.0.2.2"), "root", "right-password")
    made_up = attempt(Client(REMOTE_ADDR="192.0.2.2"), "ghost", "right-password")

    assert real[2] is False and made_up[2] is False
    assert LOCKED_MESSAGE in real[1] and LOCKED_MESSAGE in made_up[1]
    assert real[0] == made_up[0] and errors(real[1]) == errors(made_up[1])
    # Another name from the same client is not locked by them (3 + 3 failures < 8 per client).
    get_user_model().objects.create_superuser("other", "o@example.com", "pw-other")
    assert attempt(client, "other", "pw-other")[2] is True


@pytest.mark.usefixtures("shared_cache")
def test_a_client_is_locked_out_after_failures_across_many_names() -> None:
    client = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(8):
        assert LOCKED_MESSAGE not in attempt(client, f"guess-{n}", "wrong")[1]

    _, page, signed_in = attempt(client, "root", "right-password")

    assert LOCKED_MESSAGE in page and not signed_in
    assert attempt(Client(REMOTE_ADDR="198.51.100.8"), "root", "right-password")[2] is True


@pytest.mark.usefixtures("shared_cache")
def test_a_right_password_clears_the_names_count() -> None:
    client = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(2):
        attempt(client, "root", "wrong")
    assert attempt(client, "root", "right-password")[2] is True
    client.logout()

    for _ in range(2):
        attempt(client, "root", "wrong")

    assert attempt(client, "root", "right-password")[2] is True


def test_the_counts_are_shared_by_every_process(shared_cache: str, redis_url: str) -> None:
    client = Client(REMOTE_ADDR="192.0.2.9")
    for _ in range(3):
        attempt(client, "root", "wrong")
    probe = (
        "from django.test import RequestFactory; from core.admin_login import is_locked; "
        "r = RequestFactory().get('/', REMOTE_ADDR='192.0.2.10'); print(is_locked(r, 'ROOT'), is_locked(r, 'x'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "REDIS_URL": redis_url,  # base.py then keeps Django's cache in Redis under <prefix>:cache
        "REDIS_KEY_PREFIX": shared_cache,
        "ADMIN_LOGIN_MAX_FAILURES": "3",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True False"
