"""Admin benchmark: the order worklist against a stock ModelAdmin, on the same 1,000,000 orders.

Both admins answer through Django's test Client as a logged-in superuser, warm (a few
requests first), in the same process and against the same database. The time is the
server's: from the request entering the handler to the rendered response. The stock admin
is registered on its own AdminSite, mounted only in this module's urlconf, and looks like
the admin one writes first: list filters on status, merchant and cause, two `search_fields`
(icontains), a `date_hierarchy`, exact full counts, the default paginator, facets allowed.
Both show the same number of rows per page.

Pages: the unfiltered list, the unreturned list (`unreturned=yes`; the stock admin gets the
same orders with `stuck_since__isnull=False`) and a search by an exact order reference; the
report adds a few other worklist pages and the CSV export's rate, without targets.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from html import unescape

from django.contrib import admin
from django.urls import include, path

from bench.dataset import Dataset
from bench.report import Result, median
from orders.models import Order

# Targets from the issue: median server time of the worklist pages.
TARGETS_MS = {"unfiltered": 60.0, "unreturned": 80.0, "search": 30.0}
QUERY_LIMIT = 10

stock_site = admin.AdminSite(name="stockadmin")


class StockOrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "merchant", "status", "amount", "currency", "submitted_at", "stuck_since",
                    "stuck_cause", "needs_review"]
    list_filter = ["status", "merchant", "stuck_cause"]
    search_fields = ["reference", "customer_email"]
    date_hierarchy = "submitted_at"


stock_site.register(Order, StockOrderAdmin)

# The benchmark's urlconf: the project's URLs plus the stock admin.
urlpatterns = [
    path("stock-admin/", stock_site.urls),
    path("", include("backoffice.urls")),
]


@dataclass
class Page:
    key: str
    label: str
    worklist: str  # query string of the worklist page
    stock: str | None = None  # the same orders through the stock admin (None: not compared)
    target_ms: float | None = None
    runs_ms: list[float] = field(default_factory=list)
    stock_runs_ms: list[float] = field(default_factory=list)
    queries: int = 0
    stock_queries: int = 0
    rows: int = 0
    count_text: str = ""

    @property
    def ms(self) -> float:
        return median(self.runs_ms)

    @property
    def stock_ms(self) -> float:
        return median(self.stock_runs_ms)

    @property
    def ok(self) -> bool:
        return (self.target_ms is None or self.ms <= self.target_ms) and self.queries <= QUERY_LIMIT


def _references(ds: Dataset, n: int) -> list[str]:
    """References spread over the table (the generator numbers them ORD-<id, 9 digits>)."""
    step = max(ds.orders // (n + 1), 1)
    return [f"ORD-{i * step:09d}" for i in range(1, n + 1)]


def _client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.com"}
    )
    if not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    client = Client()
    client.force_login(user)
    return client


def _get(client, url: str) -> tuple[float, object]:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return elapsed, response


def _measure(client, base: str, query: str | list[str], runs: int, warm: int) -> tuple[list[float], int, object]:
    """Median-able timings of `runs` requests after `warm` ones; the queries of one request."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    queries = [query] if isinstance(query, str) else query
    for i in range(warm):
        _get(client, base + queries[i % len(queries)])
    reset_queries()  # the request clears the log when it starts: count from an empty one
    with CaptureQueriesContext(connection) as captured:
        _, response = _get(client, base + queries[0])
    n_queries = len(captured)  # now: the next request empties the log this reads
    timings = [_get(client, base + queries[i % len(queries)])[0] for i in range(runs)]
    return timings, n_queries, response


def _rows_and_count(response) -> tuple[int, str]:
    html = response.content.decode()
    count = re.search(r'<span class="worklist-count">(.*?)</span>', html, re.S)
    return html.count('<th class="field-reference">'), unescape(count.group(1).strip()) if count else "?"


def run(ds: Dataset, *, runs: int = 15, stock_runs: int = 5, profile: bool = False, log=print) -> Result:
    from django.conf import settings
    from django.test.utils import override_settings

    from backoffice.worklist import WorklistMixin, clear_worklist_choices

    clear_worklist_choices()
    per_page = WorklistMixin.list_per_page
    StockOrderAdmin.list_per_page = per_page
    references = _references(ds, 8)
    search = [f"?q={ref}" for ref in references]
    pages = [
        Page("unfiltered", "unfiltered worklist", "", "", TARGETS_MS["unfiltered"]),
        Page("unreturned", "unreturned worklist (`unreturned=yes`)", "?unreturned=yes", "?stuck_since__isnull=False",
             TARGETS_MS["unreturned"]),
        Page("search", "search by exact order reference", "", "", TARGETS_MS["search"]),
        Page("cause", "cause filter (`stuck_cause__exact=result_unknown`)", "?stuck_cause__exact=result_unknown",
             "?stuck_cause__exact=result_unknown"),
        Page("review", "needs review", "?needs_review__exact=1"),
        Page("merchant", "one merchant (`merchant=bench-07`)", "?merchant=bench-07"),
        Page("unreturned_merchant", "one merchant's unreturned orders", "?unreturned=yes&merchant=bench-07"),
        Page("age", "unreturned for more than 24 h (`age=gt24h`)", "?age=gt24h"),
        Page("status", "status filter (`status__exact=payment_pending`)", "?status__exact=payment_pending"),
        Page("provider", "provider filter (`provider=sandbox`)", "?provider=sandbox"),
        Page("prefix", "prefix search (`ORD-00050000*`, 10 orders)", "?q=ORD-00050000*"),
        Page("page2", "unfiltered, page 2", "?p=2"),
    ]
    worklist_url, stock_url = "/admin/orders/order/", "/stock-admin/orders/order/"
    from django.db import connection

    with connection.cursor() as cursor:  # start from all-visible pages, whatever ran before
        cursor.execute("VACUUM (ANALYZE) orders_order")
    # Not setup_test_environment(): its instrumented template rendering would add to every page.
    hosts = [*settings.ALLOWED_HOSTS, "testserver"]
    with override_settings(ROOT_URLCONF="bench.admin_bench", DEBUG=False, ALLOWED_HOSTS=hosts):
        client = _client()
        log(f"admin: {per_page} rows per page, {runs} timed requests per worklist page, {stock_runs} per stock page")
        for page in pages:
            query = search if page.key == "search" else page.worklist
            page.runs_ms, page.queries, response = _measure(client, worklist_url, query, runs, warm=3)
            page.rows, page.count_text = _rows_and_count(response)
            if page.stock is not None:
                stock_query = search if page.key == "search" else page.stock
                page.stock_runs_ms, page.stock_queries, _ = _measure(client, stock_url, stock_query, stock_runs,
                                                                     warm=1)
            speedup = f", stock {page.stock_ms:7.1f} ms ({page.stock_queries} queries), " \
                      f"{page.stock_ms / page.ms:4.1f}x" if page.stock_runs_ms else ""
            log(f"  {page.key:<20} {page.ms:6.1f} ms  {page.queries:>2} queries  {page.rows:>3} rows  "
                f"[{page.count_text}]{speedup}")

        # 100 rows a page: the query count must not move.
        WorklistMixin.list_per_page = 100
        try:
            big_ms, big_queries, _ = _measure(client, worklist_url, "?unreturned=yes", runs, warm=2)
        finally:
            WorklistMixin.list_per_page = per_page
        log(f"  unreturned, 100 rows {median(big_ms):6.1f} ms  {big_queries:>2} queries")

        # Between two vacuums (the sweep revisits flagged orders all day) the pages holding
        # flagged orders are not all-visible: counting them reads the heap and takes several
        # times longer. Touch every flagged row, measure, then vacuum the table back.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("UPDATE orders_order SET updated_at = updated_at WHERE stuck_since IS NOT NULL")
        try:
            dirty_ms, dirty_queries, response = _measure(client, worklist_url, "?unreturned=yes", runs, warm=2)
            dirty_count = _rows_and_count(response)[1]
        finally:
            with connection.cursor() as cursor:
                cursor.execute("VACUUM (ANALYZE) orders_order")
        log(f"  unreturned, visibility map cleared {median(dirty_ms):6.1f} ms  {dirty_queries:>2} queries  "
            f"[{dirty_count}]")

        # The CSV export of the unreturned list: rows per second, streamed.
        started = time.perf_counter()
        response = client.get("/admin/orders/order/export.csv?unreturned=yes")
        exported = sum(chunk.count(b"\n") for chunk in response.streaming_content) - 1
        export_s = time.perf_counter() - started
        log(f"  CSV export (unreturned): {exported:,} rows in {export_s:.2f} s ({exported / export_s:,.0f} rows/s)")

        profile_text = ""
        if profile:
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(5):
                client.get(worklist_url + "?unreturned=yes")
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            profile_text = out.getvalue()
            log(profile_text)

    targeted = [p for p in pages if p.target_ms is not None]
    ok = all(p.ok for p in pages) and max(big_queries, dirty_queries) <= QUERY_LIMIT
    headline = [
        f"{p.label}: median {p.ms:.1f} ms, target <= {p.target_ms:.0f} ms  [{'ok' if p.ms <= p.target_ms else 'MISSED'}]"
        f"; stock admin {p.stock_ms:.0f} ms, {p.stock_ms / p.ms:.0f}x faster; {p.queries} queries"
        for p in targeted
    ]
    headline.append(f"queries per page: at most {max(max(p.queries for p in pages), big_queries, dirty_queries)} "
                    f"(limit {QUERY_LIMIT}), {big_queries} with 100 rows a page")

    lines = [
        f"Median server time of {runs} requests through Django's test Client (logged-in superuser, warm), "
        f"{per_page} rows a page, over {ds.orders:,} orders. The stock `ModelAdmin` (list filters on status, "
        f"merchant and cause, `search_fields = ['reference', 'customer_email']`, a `date_hierarchy`, "
        f"{per_page} rows a page) answers the same pages on the same data ({stock_runs} requests each). "
        "`bench/admin_bench.py`; `.venv/bin/python bench/run.py --only admin`.",
        "",
        "| page | worklist | target | queries | stock admin | stock queries | faster |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in targeted:
        mark = "ok" if p.ms <= p.target_ms else "**missed**"
        lines.append(f"| {p.label} | {p.ms:.1f} ms | <= {p.target_ms:.0f} ms ({mark}) | {p.queries} | "
                     f"{p.stock_ms:,.0f} ms | {p.stock_queries} | {p.stock_ms / p.ms:.0f}x |")
    lines += [
        "",
        "Other worklist pages (no target; the count shown is what the page says):",
        "",
        "| page | worklist | queries | rows | count shown | stock admin |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for p in pages:
        if p.target_ms is not None:
            continue
        stock = f"{p.stock_ms:,.0f} ms ({p.stock_ms / p.ms:.0f}x slower)" if p.stock_runs_ms else ""
        lines.append(f"| {p.label} | {p.ms:.1f} ms | {p.queries} | {p.rows} | {p.count_text} | {stock} |")
    lines += [
        f"| unreturned worklist, 100 rows a page | {median(big_ms):.1f} ms | {big_queries} | 100 | | |",
        f"| unreturned worklist after every flagged order was updated (visibility map cleared, as between two "
        f"vacuums) | {median(dirty_ms):.1f} ms | {dirty_queries} | 50 | {dirty_count} | |",
        "",
        f"CSV export of the unreturned worklist: {exported:,} rows streamed in {export_s:.2f} s "
        f"({exported / export_s:,.0f} rows/s).",
        "",
        f"Search figures are the median over {len(references)} different references (exact match, one indexed "
        "lookup per column joined by UNION ALL); the stock admin's `icontains` scans the table for each.",
        "",
        "What the worklist does differently (`backoffice/worklist.py`):",
        "",
        "* No exact count of the whole table: unfiltered, the planner's estimate (`pg_class.reltuples`, shown as "
        "\"about N\"); filtered, an exact count if it finishes within 30 ms, sent with its `SET LOCAL "
        "statement_timeout` in one round trip; past that, the planner's estimate for the filter (one `EXPLAIN`). "
        "Counting flagged orders takes about 5 ms on a freshly vacuumed table but 180-280 ms once updates have "
        "cleared the visibility map (the row above), hence the short limit. Pages past an estimate can be asked "
        "for; the page links never jump to a last page.",
        "* No second \"full\" count, no facets, no date hierarchy; filters with fixed choices (providers and "
        "merchants memoised for 10 minutes per process, not a `SELECT DISTINCT` per page).",
        "* A constant number of queries: merchant and assignee joined, the attempts in one prefetch of eight "
        "columns; the last check comes from the attempt's own columns, never from the checks table.",
        "* Filters on the flag (`unreturned`, cause, category, age) say `stuck_since IS NOT NULL`, so the partial "
        "indexes on flagged orders serve them, and those lists are ordered by `stuck_since` (longest waiting "
        "first), the order of those indexes.",
        "* Search: exact, or a prefix with a trailing `*`, on reference, provider reference, customer email and "
        "phone, each with a `varchar_pattern_ops` index (serves `=` and `LIKE 'prefix%'` under any collation), "
        "one lookup per column joined by `UNION ALL` (an `OR` across orders and attempts scans the table).",
        "* The price: four indexes on `orders_order` (reference, email, phone, status) of which three are new "
        "(the plain email index was replaced). Every non-HOT update writes into them: in a rough test an `UPDATE` "
        "of 50,000 orders' `sweep_due_at` took about 10 % longer with the three. The status index "
        "(`order_status_recent_idx`) is the one to drop if the sweep needs the write budget back: without it a "
        "filter on a rare status walks the recent-orders index past the other statuses (about 30 ms for `paid` "
        "here) and its count runs out of time (30 ms more, then an estimate) instead of taking a few milliseconds.",
    ]
    return Result(key="admin", title="Order worklist (Django admin) at 1,000,000 orders", ok=ok,
                  headline=headline, markdown="\n".join(lines))
