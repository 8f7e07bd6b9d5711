"""The auditor's console in a real browser: Debian's Chromium, headless, against a real gateway
process and a real OpenID Connect provider process (node-oidc-provider)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from tests.e2e.browser import assert_accessible, screenshot, system_chromium
from tests.e2e.conftest import ROOT, Gateway, StartGateway
from tests.oidc.harness import ACCOUNTS, OIDCProvider, password_of
from tests.support import free_port

pytestmark = pytest.mark.e2e

BREAK_GLASS_PASSWORD = "break-glass-" + uuid.uuid4().hex  # made for this run


@dataclass
class Console:
    gateway: Gateway
    provider: OIDCProvider
    break_glass_user: str
    session_id: str

    @property
    def url(self) -> str:
        return self.gateway.base_url


@pytest.fixture(scope="module")
def console(
    start_gateway: StartGateway, model_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """A gateway signing its admin in through a provider that knows the gateway's address."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = OIDCProvider(
        tmp_path_factory.mktemp("oidc-browser"),
        redirect_uris=[f"{base}/oidc/callback/"],
        post_logout_uris=[f"{base}/admin/login/"],
    ).start()
    gateway = start_gateway(model_server, port=port, LOG_LEVEL="INFO", **provider.environment())
    user = "breakglass-" + uuid.uuid4().hex[:6]
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", user, "--email", "bg@example.com"],
        cwd=ROOT, env=gateway.env | {"DJANGO_SUPERUSER_PASSWORD": BREAK_GLASS_PASSWORD}, check=True,
    )  # fmt: skip
    with gateway.client(gateway.dev_token(sub="browser-owner")) as http:
        created = http.post("/api/v1/sessions", json={"system_prompt": "Be brief.", "model": "echo"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        assert http.post(f"/api/v1/sessions/{session_id}/messages", json={"content": "hello"}).status_code == 200
    yield Console(gateway, provider, user, session_id)
    provider.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=system_chromium(), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh browser profile per test: no cookies at the gateway or the provider."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def sign_in_through_provider(page: Page, console: Console, login: str, *, shots: bool = False) -> None:
    page.goto(f"{console.url}/admin/")
    expect(page).to_have_url(f"{console.url}/admin/login/?next=/admin/")
    if shots:
        screenshot(page, "01-admin-login")
        assert_accessible(page)
    page.get_by_role("link", name="Sign in with your organisation").click()
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()
    if shots:
        screenshot(page, "02-provider-login")
        assert_accessible(page)
    page.get_by_label("Username").fill(login)
    page.get_by_label("Password").fill(password_of(login))
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page, console: Console, *, shots: bool = False) -> None:
    page.get_by_role("button", name="Log out").click()
    confirm = page.get_by_role("button", name="Yes, sign me out")  # the provider asks
    if shots:
        expect(confirm).to_be_visible()
        screenshot(page, "06-provider-sign-out")
    confirm.click()
    expect(page).to_have_url(f"{console.url}/admin/login/")


def test_an_auditor_signs_in_sees_the_sessions_and_signs_out_everywhere(page: Page, console: Console) -> None:
    seen: list[str] = []  # every URL the browser asked for with a query
    page.on("request", lambda request: _note(request, seen))

    sign_in_through_provider(page, console, "ada", shots=True)

    expect(page).to_have_url(f"{console.url}/admin/")
    expect(page.get_by_role("link", name="Session records")).to_be_visible()
    screenshot(page, "03-admin-index")
    assert_accessible(page)
    page.get_by_role("link", name="Session records").click()
    expect(page.get_by_text(console.session_id[:8], exact=False).first).to_be_visible()
    screenshot(page, "04-session-list")
    assert_accessible(page)

    sign_out(page, console, shots=True)

    page.goto(f"{console.url}/admin/")  # the admin session is over ...
    expect(page).to_have_url(f"{console.url}/admin/login/?next=/admin/")
    page.get_by_role("link", name="Sign in with your organisation").click()
    expect(page.get_by_role("heading", name="Sign in to the test provider")).to_be_visible()  # ... and the provider's
    # The gateway logged the requests (INFO), but none of the codes, states or ID tokens in their URLs.
    log = console.gateway.process.log.read_text(errors="replace")
    assert "[gateway.access]" in log
    secrets = [value for url in seen for key, value in parse_qsl(urlsplit(url).query) if key in CREDENTIALS]
    assert {"code", "id_token_hint"} <= {key for url in seen for key, _ in parse_qsl(urlsplit(url).query)}
    for secret in secrets:
        assert secret not in log


CREDENTIALS = {"code", "state", "id_token_hint", "nonce", "code_challenge"}


def _note(request: Request, seen: list[str]) -> None:
    if "?" in request.url:
        seen.append(request.url)


def test_someone_without_the_auditor_role_is_refused(page: Page, console: Console) -> None:
    sign_in_through_provider(page, console, "ned")

    expect(page).to_have_url(f"{console.url}/oidc/denied/")
    expect(page.get_by_role("heading", name="Sign-in refused")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("does not hold the auditor role")
    screenshot(page, "05-sign-in-refused")
    assert_accessible(page)
    page.goto(f"{console.url}/admin/sessions_app/sessionrecord/")
    expect(page).to_have_url(f"{console.url}/admin/login/?next=/admin/sessions_app/sessionrecord/")

    page.go_back()  # the refused page offers to sign out at the provider, to come back as an auditor
    page.get_by_role("link", name="Sign out of the identity provider to sign in as someone else").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(f"{console.url}/admin/login/")
    sign_in_through_provider(page, console, "ada")
    expect(page).to_have_url(f"{console.url}/admin/")


def test_a_role_removed_at_the_provider_takes_effect_at_the_next_sign_in(page: Page, console: Console) -> None:
    sign_in_through_provider(page, console, "flo")
    expect(page).to_have_url(f"{console.url}/admin/")
    sign_out(page, console)
    console.provider.set_roles("flo", ["staff"])
    try:
        sign_in_through_provider(page, console, "flo")

        expect(page).to_have_url(f"{console.url}/oidc/denied/")
        expect(page.get_by_role("alert")).to_contain_text("does not hold the auditor role")
    finally:
        console.provider.set_roles("flo", list(ACCOUNTS["flo"]["roles"]))


def test_the_break_glass_superuser_signs_in_with_a_password(page: Page, console: Console) -> None:
    page.goto(f"{console.url}/admin/login/")
    page.get_by_label("Username").fill(console.break_glass_user)
    page.get_by_label("Password").fill(BREAK_GLASS_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(f"{console.url}/admin/")
    page.goto(f"{console.url}/admin/audit/auditevent/")
    expect(page.get_by_text(f"breakglass:{console.break_glass_user}").first).to_be_visible()
    screenshot(page, "07-audit-trail")
    assert_accessible(page)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{console.url}/admin/login/")  # no provider to visit


def test_an_auditor_finds_a_session_reads_it_for_a_reason_and_finds_that_in_the_trail(
    page: Page, console: Console
) -> None:
    sign_in_through_provider(page, console, "ada")
    expect(page).to_have_url(f"{console.url}/admin/")

    page.get_by_role("link", name="Session records").click()  # find
    page.locator("#searchbar").fill(console.session_id[:13])
    page.locator("#searchbar").press("Enter")
    expect(page.get_by_text("1 session record")).to_be_visible()
    screenshot(page, "08-session-search")
    assert_accessible(page)
    page.get_by_role("link", name=console.session_id).click()  # look
    expect(page.locator("#timeline")).to_contain_text("Created")
    expect(page.locator("#timeline")).to_contain_text("Turns (last activity)")
    expect(page.get_by_text("hello")).to_have_count(0)  # no content on the session's page
    screenshot(page, "09-session-page")
    assert_accessible(page)

    page.get_by_role("link", name="Open the transcript (your reading is audited)").click()
    page.get_by_label("Reason").fill("too short")
    page.get_by_role("button", name="Open the transcript").click()  # the browser holds it back (minlength)
    assert page.get_by_label("Reason").evaluate("el => el.validity.tooShort")
    expect(page.get_by_role("status")).to_have_count(0)
    screenshot(page, "10-transcript-reason")
    assert_accessible(page)
    page.get_by_label("Reason").fill("Subject access request 2026-118")
    page.get_by_role("button", name="Open the transcript").click()
    expect(page.get_by_role("status")).to_contain_text("has been recorded in the audit trail")
    expect(page.get_by_role("cell", name="hello", exact=True)).to_be_visible()
    screenshot(page, "11-transcript")
    assert_accessible(page)

    page.goto(f"{console.url}/admin/audit/auditevent/")  # the reading, in the trail
    page.get_by_label("session", exact=True).fill(console.session_id)
    page.get_by_role("form", name="Filter by session").get_by_role("button", name="Apply").click()
    expect(page.get_by_role("cell", name="transcript.view")).to_be_visible()
    screenshot(page, "12-audit-trail-of-a-session")
    assert_accessible(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export these events as CSV").click()
    exported = download.value.path().read_text()
    assert exported.startswith("at,actor,action,") and "Subject access request 2026-118" in exported
    assert "hello" not in exported

    page.goto(f"{console.url}/admin/")  # report
    page.get_by_role("link", name="Overview: sessions, archiving, purges, erasures and transcript views").click()
    expect(page.get_by_role("img", name="Transcript views per auditor")).to_be_visible()
    expect(page.get_by_role("heading", name="Sessions by status")).to_be_visible()
    screenshot(page, "13-overview")
    assert_accessible(page)
