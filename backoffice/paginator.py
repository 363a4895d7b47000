"""Paginators that never count a million rows to draw a page.

Django's paginator runs an exact COUNT(*) for every page. Over a large table that COUNT
costs more than the page itself, so:

- an unfiltered list on PostgreSQL takes the planner's estimate (`pg_class.reltuples`);
- a filtered list counts exactly, but only up to a time limit on PostgreSQL; past it, or on
  other databases past `cap` rows, the count stops at `cap` and is shown as "cap+".
"""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator
from django.db import DatabaseError, connections, transaction


class LargeTablePaginator(Paginator):
    cap = 10_000
    count_timeout_ms = 100

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        connection = connections[queryset.db]
        self.is_estimate = False
        if connection.vendor == "postgresql":
            if not queryset.query.where:
                estimate = self._reltuples(queryset, connection)
                if estimate is not None and estimate > self.cap:
                    self.is_estimate = True
                    return estimate
            exact = self._timed_count(queryset, connection)
            if exact is not None:
                return exact
        capped = queryset.order_by().values("pk")[: self.cap + 1].count()
        if capped > self.cap:
            self.is_estimate = True
            return self.cap
        return capped

    def _reltuples(self, queryset, connection) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table])
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None

    def _timed_count(self, queryset, connection) -> int | None:
        try:
            with transaction.atomic(using=queryset.db):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                        [f"{self.count_timeout_ms}ms"],
                    )
                    previous = cursor.fetchone()[0]
                count = queryset.order_by().count()
                with connection.cursor() as cursor:
                    # When called inside a longer transaction, later queries keep their own limit.
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
                return count
        except DatabaseError:
            # The savepoint is rolled back; the capped count below still answers.
            return None
