"""Choosing adapters once: a settings entry names a class by dotted path and its options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


def build_adapter(spec: Mapping[str, Any]) -> Any:
    """Instantiate `{"CLASS": "pkg.mod.Class", "OPTIONS": {...}}`."""
    try:
        cls = import_string(spec["CLASS"])
    except (KeyError, ImportError) as exc:
        raise ImproperlyConfigured(f"Cannot load adapter {spec!r}: {exc}") from exc
    return cls(**spec.get("OPTIONS", {}))
