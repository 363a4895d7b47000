"""A paginator for tables of millions of rows.

Django's paginator runs an exact COUNT(*) for every page, and over a large table that
COUNT costs more than the page itself. `LargeTablePaginator` answers with the planner's
estimate, a time-limited exact count, or a capped count, and says which one it gave.
"""

from __future__ import annotations

import json
from functools import cached_property

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import DatabaseError, connections, transaction
from django.utils.translation import gettext as _


class LargeTablePaginator(Paginator):
    """A paginator that never counts a whole large table, says which kind of count it has,
    never waits long for one, and pages through estimates.

    On PostgreSQL: unfiltered, the planner's row estimate (`pg_class.reltuples`); filtered, an
    exact count if it finishes within `count_timeout_ms`, taken in one round trip; past that,
    the planner's estimate for the filter (one EXPLAIN, about a millisecond). A count that
    finishes in time on a freshly vacuumed table can take several times longer once updates
    have cleared the visibility map (the sweep revisits flagged orders all day): the short
    limit and the estimate keep the page fast either way. Elsewhere: a count capped at `cap`.

    `count_kind` is "exact", "estimate" or "capped" (the count stopped at `cap`). With an
    estimate or a cap, any page number can be asked for: the end is not known exactly.
    """

    cap = 10_000
    count_kind = "exact"
    count_timeout_ms = 30

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        connection = connections[queryset.db]
        self.is_estimate = False
        if queryset.query.is_empty():
            return 0
        if connection.vendor == "postgresql":
            if not queryset.query.where:
                estimate = self._reltuples(queryset, connection)
                if estimate is not None and estimate > self.cap:
                    return self._estimate(estimate)
                # A small table, or one never analysed: without a filter the capped count
                # below reads at most `cap` + 1 rows, so it needs no time limit.
            else:
                exact = self._timed_count(queryset, connection)
                if exact is not None:
                    return exact
                estimate = self._planner_estimate(queryset)
                if estimate is not None:
                    return self._estimate(estimate)
        capped = queryset.order_by().values("pk")[: self.cap + 1].count()
        if capped > self.cap:
            self.is_estimate, self.count_kind = True, "capped"
            return self.cap
        return capped

    def _estimate(self, rows: int) -> int:
        self.is_estimate, self.count_kind = True, "estimate"
        return max(int(rows), 1)

    def _planner_estimate(self, queryset) -> int | None:
        try:
            plan = queryset.order_by().values("pk").explain(format="json")
            return int(json.loads(plan)[0]["Plan"]["Plan Rows"])
        except (DatabaseError, ValueError, KeyError, IndexError, TypeError):
            return None

    def validate_number(self, number):
        if not (self.count and self.is_estimate):  # `count` sets is_estimate
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(_("That page number is not an integer"))
        if number < 1:
            raise EmptyPage(_("That page number is less than 1"))
        return number

    def page(self, number):
        number = self.validate_number(number)
        if not self.is_estimate:
            return super().page(number)
        # Past an estimate the end is unknown: take a full slice, it may come back short or empty.
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom:bottom + self.per_page], number, self)

    def _timed_count(self, queryset, connection) -> int | None:
        # Several statements in one string run in one implicit transaction (psycopg's
        # client-side binding sends them as one simple query), so the LOCAL timeout dies with
        # it. Inside an outer transaction a savepoint undoes the timeout when the count is
        # cancelled, and the last statement restores it when the count succeeds.
        inner, params = queryset.order_by().values("pk").query.get_compiler(using=queryset.db).as_sql()
        sql = (
            "SELECT set_config('worklist.previous_timeout', current_setting('statement_timeout'), true), "
            "set_config('statement_timeout', %s, true); "
            f"SELECT COUNT(*) FROM ({inner}) AS worklist_count; "
            "SELECT set_config('statement_timeout', current_setting('worklist.previous_timeout'), true)"
        )
        params = (f"{self.count_timeout_ms}ms", *params)
        try:
            if connection.in_atomic_block:
                with transaction.atomic(using=queryset.db), connection.cursor() as cursor:
                    return self._run_count(cursor, sql, params)
            with connection.cursor() as cursor:
                return self._run_count(cursor, sql, params)
        except DatabaseError:
            return None

    @staticmethod
    def _run_count(cursor, sql: str, params) -> int:
        cursor.execute(sql, params)
        cursor.nextset()
        return int(cursor.fetchone()[0])

    def _reltuples(self, queryset, connection) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table])
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None
