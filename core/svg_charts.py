"""Small bar charts drawn on the server as inline SVG: no script, no library, no CDN; each with
a text alternative, and the same figures in a table beside it on the page."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

BAR_HEIGHT = 22
LABEL_WIDTH = 210
BAR_WIDTH = 260
VALUE_WIDTH = 70


def bar_chart(title: str, rows: Sequence[tuple[str, int]]) -> SafeString:
    """A horizontal bar per (label, value), scaled to the largest value."""
    largest = max((value for _, value in rows), default=0) or 1
    height = BAR_HEIGHT * max(len(rows), 1) + 4
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    summary = ", ".join(f"{label}: {value}" for label, value in rows) or "nothing to show"
    bars = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="{}" rx="2" fill="#417690"></rect>'
        '<text x="{}" y="{}" dominant-baseline="middle">{}</text>',
        (_bar(i, label, value, largest) for i, (label, value) in enumerate(rows)),
    )
    return format_html(
        '<svg class="chart" role="img" aria-label="{}: {}" width="{}" height="{}" viewBox="0 0 {} {}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="13" fill="currentColor"><title>{}</title>{}</svg>',
        title, summary, width, height, width, height, title, bars,
    )  # fmt: skip


def _bar(index: int, label: str, value: int, largest: int) -> tuple[object, ...]:
    top, middle = BAR_HEIGHT * index, BAR_HEIGHT * index + BAR_HEIGHT // 2 + 2
    length = round(BAR_WIDTH * value / largest)
    if value and not length:
        length = 1  # a small value still shows
    return (LABEL_WIDTH - 8, middle, _short(label), LABEL_WIDTH, top + 4, length, BAR_HEIGHT - 6,
            LABEL_WIDTH + length + 6, middle, value)  # fmt: skip


def _short(label: str) -> str:
    return label if len(label) <= 26 else label[:25] + "…"
