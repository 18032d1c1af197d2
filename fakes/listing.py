"""DRF / django-filter style list semantics: filters, ordering and page-number pagination.

The fake should be as strict and as lenient as the real thing: unknown parameters and empty values
are ignored (so the caller learns about a typo only from the recorded requests), invalid values are a
400, a page past the end is a 404 "Invalid page.", and ``next`` / ``previous`` are absolute URLs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

PAGINATION_PARAMS = frozenset({"limit", "page", "ordering"})
DEFAULT_LIMIT = 10

Item = dict[str, Any]
Filter = Callable[[Item, str], bool]


class QueryError(Exception):
    """A bad filter value; the fake answers 400 with ``{param: [message]}`` like django-filter."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


class InvalidPage(Exception):
    """A page number outside the result; DRF answers 404 {"detail": "Invalid page."}."""


def parse_datetime(value: str) -> datetime:
    """ISO-8601 with ``Z`` or an offset; naive values count as UTC (Django's default time zone)."""
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def equals(get: Callable[[Item], Any]) -> Filter:
    return lambda item, value: str(get(item)) == value


def int_equals(param: str, get: Callable[[Item], Any]) -> Filter:
    def check(item: Item, value: str) -> bool:
        return get(item) == _to_int(param, value)

    return check


def int_in(param: str, get: Callable[[Item], Any]) -> Filter:
    """``channel_id__in=1,2,3``: django-filter's BaseInFilter over integers."""

    def check(item: Item, value: str) -> bool:
        wanted = {_to_int(param, part) for part in value.split(",") if part.strip()}
        return not wanted or get(item) in wanted

    return check


def is_null(param: str, get: Callable[[Item], Any]) -> Filter:
    def check(item: Item, value: str) -> bool:
        flag = value.strip().lower()
        if flag not in ("true", "false", "1", "0"):
            raise QueryError(param, "Select a valid choice.")
        return (get(item) is None) == (flag in ("true", "1"))

    return check


def date_compare(param: str, get: Callable[[Item], str]) -> Filter:
    """``modified_date__gt`` and friends; the lookup is the suffix of the parameter name."""
    compare = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }[param.rsplit("__", 1)[1]]

    def check(item: Item, value: str) -> bool:
        try:
            limit = parse_datetime(value)
        except ValueError:
            raise QueryError(param, "Enter a valid date/time.") from None
        return compare(parse_datetime(get(item)), limit)

    return check


def date_filters(field: str, get: Callable[[Item], str]) -> dict[str, Filter]:
    return {f"{field}__{op}": date_compare(f"{field}__{op}", get) for op in ("gt", "gte", "lt", "lte")}


def apply_filters(
    items: Iterable[Item], query: dict[str, str], filters: dict[str, Filter], known: frozenset[str] = PAGINATION_PARAMS
) -> tuple[list[Item], list[str]]:
    """Items passing every given filter, plus the names of parameters that were ignored (neither a
    filter nor one of the `known` paging and ordering parameters)."""
    active = {name: value for name, value in query.items() if name in filters and value != ""}
    ignored = [name for name in query if name not in filters and name not in known]
    result = [item for item in items if all(filters[n](item, v) for n, v in active.items())]
    return result, ignored


def order(items: list[Item], ordering: str | None, keys: dict[str, Callable[[Item], Any]]) -> list[Item]:
    """DRF OrderingFilter: comma-separated fields, ``-`` for descending, unknown fields dropped.

    ``pk`` always breaks ties so paging is stable.
    """
    fields = [f.strip() for f in (ordering or "").split(",") if f.strip().lstrip("-") in keys]
    if "pk" not in [f.lstrip("-") for f in fields]:
        fields.append("pk")
    result = list(items)
    for name in reversed(fields):
        result.sort(key=keys[name.lstrip("-")], reverse=name.startswith("-"))
    return result


def paginate(items: list[Item], query_string: str, base_url: str) -> dict[str, Any]:
    """One page as ``{"count", "next", "previous", "results"}``; links keep the caller's query."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    query = dict(pairs)
    limit = _positive_int(query.get("limit"), DEFAULT_LIMIT)
    try:
        page = int(query.get("page") or 1)
    except ValueError:
        raise InvalidPage() from None
    pages = max(1, math.ceil(len(items) / limit))
    if not 1 <= page <= pages:
        raise InvalidPage()
    return {
        "count": len(items),
        "next": _link(base_url, pairs, page + 1) if page < pages else None,
        "previous": _link(base_url, pairs, page - 1) if page > 1 else None,
        "results": items[(page - 1) * limit : page * limit],
    }


def _link(base_url: str, pairs: list[tuple[str, str]], page: int) -> str:
    """Like DRF: the same query with ``page`` replaced; page 1 drops the parameter."""
    kept = [(k, v) for k, v in pairs if k != "page"]
    if page > 1:
        kept.append(("page", str(page)))
    return f"{base_url}?{urlencode(kept)}" if kept else base_url


def _positive_int(value: str | None, default: int) -> int:
    """DRF falls back to the default page size for a missing, invalid or non-positive ``limit``."""
    try:
        number = int(value or "")
    except ValueError:
        return default
    return number if number > 0 else default


def _to_int(param: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise QueryError(param, "Enter a whole number.") from None
