"""Keyset pages of orders, newest first, as the API pages them (`-submitted_at`, `-id`).

A page is one indexed range scan of `page_size + 1` rows after (or before) the cursor: the cost
does not grow with the page number or with the merchant's order count, and no page runs a
COUNT over the merchant's orders. Orders arriving while someone pages do not shift the rows
under them. The total shown is a capped count (at most `COUNT_CAP + 1` index entries read).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
COUNT_CAP = 1000


def encode_cursor(direction: str, submitted_at: datetime, pk: int) -> str:
    raw = f"{direction}|{submitted_at.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[str, datetime, int] | None:
    """(direction, submitted_at, id) or None for anything that is not a cursor we made."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        direction, at, pk = raw.split("|")
        moment = parse_datetime(at)
        if direction not in ("n", "p") or moment is None:
            return None
        return direction, moment, int(pk)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def page_size_from(value: str | None) -> int:
    try:
        size = int(value) if value else DEFAULT_PAGE_SIZE
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return max(1, min(size, MAX_PAGE_SIZE))


@dataclass
class KeysetPage:
    rows: list
    next_cursor: str | None
    previous_cursor: str | None
    total: int
    total_capped: bool
    page_size: int

    @property
    def is_first(self) -> bool:
        return self.previous_cursor is None


def keyset_page(queryset: QuerySet, *, cursor: str | None, page_size: int) -> KeysetPage:
    position = decode_cursor(cursor) if cursor else None
    if position is None:
        rows = list(queryset.order_by("-submitted_at", "-id")[: page_size + 1])
        more_after, more_before = len(rows) > page_size, False
        rows = rows[:page_size]
    else:
        direction, at, pk = position
        if direction == "n":
            after = Q(submitted_at__lt=at) | Q(submitted_at=at, id__lt=pk)
            rows = list(queryset.filter(after).order_by("-submitted_at", "-id")[: page_size + 1])
            more_after, more_before = len(rows) > page_size, True
            rows = rows[:page_size]
        else:
            before = Q(submitted_at__gt=at) | Q(submitted_at=at, id__gt=pk)
            rows = list(queryset.filter(before).order_by("submitted_at", "id")[: page_size + 1])
            more_before, more_after = len(rows) > page_size, True
            rows = list(reversed(rows[:page_size]))
    next_cursor = encode_cursor("n", rows[-1].submitted_at, rows[-1].pk) if rows and more_after else None
    previous_cursor = encode_cursor("p", rows[0].submitted_at, rows[0].pk) if rows and more_before else None
    total = queryset.order_by().values("pk")[: COUNT_CAP + 1].count()
    return KeysetPage(rows=rows, next_cursor=next_cursor, previous_cursor=previous_cursor,
                      total=min(total, COUNT_CAP), total_capped=total > COUNT_CAP, page_size=page_size)


def query_with(params, **changes) -> str:
    """The query string of `params` (a QueryDict) with `changes` applied (None removes a key)."""
    query = params.copy()
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return query.urlencode()

