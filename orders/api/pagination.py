from __future__ import annotations

from rest_framework.pagination import CursorPagination


class OrderCursorPagination(CursorPagination):
    """Newest first. Cursors stay stable while new orders arrive, and no page costs a COUNT."""

    ordering = ("-submitted_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
