"""The real OIDC provider of the tests (tests/oidc/provider.mjs, node-oidc-provider) as a process,
and a user agent that signs in on its login page without a browser."""

from __future__ import annotations

import html
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from tests.support import ROOT, free_port

CLIENT_ID = "gateway-admin"
CLIENT_SECRET = "test-client-secret-for-the-oidc-provider"  # a test provider's
AUDITOR_ROLE = "gateway-auditor"

# The test accounts: an auditor, someone without the role, and one whose roles a test changes.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ada": {"sub": "sub-ada-0001", "name": "Ada Auditor", "roles": [AUDITOR_ROLE, "staff"]},
    "ned": {"sub": "sub-ned-0002", "name": "Ned Nobody", "roles": ["staff"]},
    "flo": {"sub": "sub-flo-0003", "name": "Flo Flipped", "roles": [AUDITOR_ROLE]},
}


def password_of(login: str) -> str:
    return f"pw-{login}-test"


@dataclass
class OIDCProvider:
    """One provider process. Its accounts and forgery switch live in a JSON file it re-reads."""

    __test__ = False

    workdir: Path
    redirect_uris: list[str]
    post_logout_uris: list[str]
    port: int = field(default_factory=free_port)
    accounts: dict[str, dict[str, Any]] = field(default_factory=lambda: json.loads(json.dumps(ACCOUNTS)))
    forge: str | None = None
    process: subprocess.Popen[bytes] | None = None
    discovery: dict[str, Any] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_file(self) -> Path:
        return self.workdir / "control.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "provider.log"

    def save(self) -> None:
        accounts = {
            login: {"password": password_of(login), "preferred_username": login, "email": f"{login}@example.com", **a}
            for login, a in self.accounts.items()
        }
        tmp = self.control_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"accounts": accounts, "forge": self.forge}))
        tmp.replace(self.control_file)  # the provider never reads half a file

    def set_roles(self, login: str, roles: list[str]) -> None:
        self.accounts[login]["roles"] = roles
        self.save()

    def set_forge(self, kind: str | None) -> None:
        self.forge = kind
        self.save()

    def start(self) -> Self:
        self.save()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "OIDC_PORT": str(self.port),
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URIS": " ".join(self.redirect_uris),
            "OIDC_POST_LOGOUT_URIS": " ".join(self.post_logout_uris),
            "OIDC_CONTROL_FILE": str(self.control_file),
        }
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                ["node", str(ROOT / "tests" / "oidc" / "provider.mjs")],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited:\n{self.log_file.read_text()}")
            try:
                answer = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if answer.status_code == 200:
                    self.discovery = answer.json()
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the OIDC provider did not answer:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def relying_party_settings(self) -> dict[str, Any]:
        """The gateway's settings for this provider, as an operator copies them from discovery."""
        return {
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
            "ADMIN_OIDC_ISSUER": self.discovery["issuer"],
            "OIDC_OP_AUTHORIZATION_ENDPOINT": self.discovery["authorization_endpoint"],
            "OIDC_OP_TOKEN_ENDPOINT": self.discovery["token_endpoint"],
            "OIDC_OP_USER_ENDPOINT": self.discovery["userinfo_endpoint"],
            "OIDC_OP_JWKS_ENDPOINT": self.discovery["jwks_uri"],
            "ADMIN_OIDC_END_SESSION_ENDPOINT": self.discovery["end_session_endpoint"],
        }

    def environment(self) -> dict[str, str]:
        """The same, as the gateway process's environment variables."""
        return {
            "ADMIN_OIDC_CLIENT_ID": CLIENT_ID,
            "ADMIN_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "ADMIN_OIDC_ISSUER": self.discovery["issuer"],
            "ADMIN_OIDC_AUTHORIZATION_ENDPOINT": self.discovery["authorization_endpoint"],
            "ADMIN_OIDC_TOKEN_ENDPOINT": self.discovery["token_endpoint"],
            "ADMIN_OIDC_USERINFO_ENDPOINT": self.discovery["userinfo_endpoint"],
            "ADMIN_OIDC_JWKS_ENDPOINT": self.discovery["jwks_uri"],
            "ADMIN_OIDC_END_SESSION_ENDPOINT": self.discovery["end_session_endpoint"],
        }


class ProviderUser:
    """A person at the provider's login page, without a browser: follows the authorization
    request, signs in, and hands back the redirect to the relying party's callback."""

    def __init__(self, provider: OIDCProvider) -> None:
        self.provider = provider
        self.http = httpx.Client(timeout=10)

    def close(self) -> None:
        self.http.close()

    def authorize(self, authorization_url: str, login: str | None) -> str:
        """The callback URL the provider redirects to (signing in as `login` when it asks)."""
        answer = self.http.get(authorization_url)
        while answer.is_redirect:
            location = urljoin(str(answer.url), answer.headers["location"])
            if not location.startswith(self.provider.issuer):
                return location  # back to the relying party
            if "/interaction/" in location and answer.request.method == "GET" and login is not None:
                page = self.http.get(location)
                assert page.status_code == 200, page.text
                answer = self.http.post(
                    location + "/login", data={"login": login, "password": password_of(login)}
                )  # fmt: skip
                login = None
                continue
            answer = self.http.get(location)
        raise AssertionError(f"the provider did not send us back: {answer.status_code} {answer.text[:500]}")

    def sign_out(self, end_session_url: str) -> str:
        """Follow the relying party to the provider's end-session page, confirm, and return
        where the provider sends us afterwards."""
        page = self.http.get(end_session_url)
        assert page.status_code == 200, page.text[:500]
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        assert action and xsrf, page.text[:500]
        answer = self.http.post(html.unescape(action.group(1)), data={"xsrf": xsrf.group(1), "logout": "yes"})
        assert answer.is_redirect, answer.text[:500]
        return urljoin(str(answer.url), answer.headers["location"])

    def is_signed_in_at_provider(self, authorization_url: str) -> bool:
        """Whether the provider would let us through without its login page."""
        answer = self.http.get(authorization_url)
        while answer.is_redirect:
            location = urljoin(str(answer.url), answer.headers["location"])
            if not location.startswith(self.provider.issuer):
                return True
            if "/interaction/" in location:
                return False
            answer = self.http.get(location)
        raise AssertionError(f"unexpected answer: {answer.status_code}")


def callback_query(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
