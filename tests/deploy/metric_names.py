"""The metric and label names a PromQL expression reads, to check against what the gateway exports."""

from __future__ import annotations

import re

# Series names the gateway exports all start with gateway_; `up` is Prometheus' own.
_METRIC = re.compile(r"\b(gateway_[a-z0-9_]+|up)\b(?!\s*\()")
_MATCHERS = re.compile(r"\b(gateway_[a-z0-9_]+)\s*\{([^}]*)\}")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def metrics_in(expr: str) -> set[str]:
    return set(_METRIC.findall(_without_strings(expr)))


def labels_matched(expr: str) -> dict[str, set[str]]:
    """metric -> the label names its selectors match on."""
    found: dict[str, set[str]] = {}
    for metric, body in _MATCHERS.findall(expr):
        found.setdefault(metric, set()).update(_LABEL.findall(_without_strings(body)))
    return found


def labels_grouped(expr: str) -> set[str]:
    return {name.strip() for group in _GROUPING.findall(expr) for name in group.split(",") if name.strip()}


def _without_strings(text: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def exported(text: str) -> dict[str, str]:
    """Every sample name a /metrics text can hold, from its TYPE lines: name -> the family."""
    names: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, family, kind = line.split(" ", 3)
        if kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                names[family + suffix] = family
        elif kind == "summary":
            for suffix in ("", "_count", "_sum"):
                names[family + suffix] = family
        else:
            names[family] = family
    return names


def label_names(text: str) -> dict[str, set[str]]:
    """family -> the label names its samples carry in a /metrics text."""
    families = exported(text)
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", line)
        if match and match.group(1) in families:
            found.setdefault(families[match.group(1)], set()).update(re.findall(r'(\w+)="', match.group(2)))
    return found
