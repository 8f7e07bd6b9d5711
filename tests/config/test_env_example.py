"""`.env.example` documents every variable the settings read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_variable_the_settings_read_is_in_env_example() -> None:
    read = set()
    for module in (ROOT / "config" / "settings").glob("*.py"):
        read |= set(re.findall(r"""env(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]*)["']""", module.read_text()))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))

    assert len(read) > 50  # the pattern still finds them
    assert read - documented == set()
