"""List filters an auditor types into (a date range, a pseudonym, an id), each checked before it
reaches a query: a bad value is a clear 400 page, never a 500 or Django's "database error"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict

# Longer than any pseudonym, id or action name: a longer value is a mistake or an attack.
MAX_VALUE_LENGTH = 200


class CheckedFilter(admin.ListFilter):
    """A filter typed into rather than picked; `problems` says what is wrong with its values."""

    template = "core/admin_filter_form.html"
    parameters: ClassVar[tuple[tuple[str, str, str], ...]]  # (parameter, label, input type)

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.values: dict[str, str] = {}
        for name, _, _ in self.parameters:
            if name in params:
                value = params.pop(name)
                self.values[name] = value[-1] if isinstance(value, list) else value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [name for name, _, _ in self.parameters]

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        mine = [name for name, _, _ in self.parameters]
        yield {
            "fields": [
                {"name": name, "label": label, "type": kind, "value": self.values.get(name, ""), "id": f"f-{name}"}
                for name, label, kind in self.parameters
            ],
            "keep": [(k, v) for k, v in changelist.params.items() if k not in mine],
            "clear": changelist.get_query_string(remove=mine),
            "selected": bool(self.values),
            "max_length": MAX_VALUE_LENGTH,
        }

    @classmethod
    def problems(cls, query: QueryDict) -> list[str]:
        return [
            f"{label}: at most {MAX_VALUE_LENGTH} characters."
            for name, label, _ in cls.parameters
            if len(query.get(name, "")) > MAX_VALUE_LENGTH
        ]


def date_range(field: str, title: str) -> type[CheckedFilter]:
    """Between two days, both included (`<field>_from`, `<field>_to`, YYYY-MM-DD, UTC)."""
    start, end = f"{field}_from", f"{field}_to"

    class DateRange(CheckedFilter):
        parameters = ((start, "From", "date"), (end, "To", "date"))

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            if first := _day(self.values.get(start, "")):
                queryset = queryset.filter(**{f"{field}__gte": datetime.combine(first, time.min, tzinfo=UTC)})
            if last := _day(self.values.get(end, "")):
                after = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
                queryset = queryset.filter(**{f"{field}__lt": after})
            return queryset

        @classmethod
        def problems(cls, query: QueryDict) -> list[str]:
            found = []
            for name in (start, end):
                value = query.get(name, "")
                if value and _day(value) is None:
                    found.append(f"{title} {name.rsplit('_', 1)[1]}: {value[:40]!r} is not a day (YYYY-MM-DD).")
            first, last = _day(query.get(start, "")), _day(query.get(end, ""))
            if first and last and first > last:
                found.append(f"{title}: the first day is after the last.")
            return found

    DateRange.title = title
    return DateRange


def text_value(
    name: str, title: str, where: Callable[[str], Q], *, check: Callable[[str], str | None] | None = None
) -> type[CheckedFilter]:
    """Rows matching one typed value (exactly, through `where`); `check` returns a problem or None."""

    class TextValue(CheckedFilter):
        parameters = ((name, title, "search"),)

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.values.get(name, "").strip()
            return queryset.filter(where(value)) if value else queryset

        @classmethod
        def problems(cls, query: QueryDict) -> list[str]:
            found = super().problems(query)
            value = query.get(name, "").strip()
            if not found and value and check is not None and (problem := check(value)):
                found.append(f"{title}: {problem}")
            return found

    TextValue.title = title
    return TextValue


def _day(value: str) -> date | None:
    if not value or len(value) != len("YYYY-MM-DD"):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
