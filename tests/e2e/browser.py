"""Debian's Chromium driven by Playwright (never a downloaded browser build), screenshots, and
axe-core's accessibility check run inside the page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.support import ROOT

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# Where each run leaves its screenshots; `make screenshots` points this at docs/screenshots.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "var" / "screenshots")


def system_chromium() -> str:
    """The distribution's browser (`apt-get install chromium`); the tests skip without one."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no system Chromium (make test installs it: apt-get install chromium)")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def critical_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of impact "critical" on the page as it stands."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"][:200] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] == "critical"
    ]


def assert_accessible(page: Page) -> None:
    violations = critical_violations(page)
    assert not violations, f"critical accessibility violations on {page.url}: {violations}"
