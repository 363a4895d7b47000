"""The order worklist: the staff changelist of orders, built to stay fast at a million orders.

`WorklistMixin` is mixed into the staff `OrderAdmin` (backoffice/admin.py). It brings the
columns, the filters, the search, the ready-made views, the paginator and the streamed CSV
export of the current filter. What keeps a page cheap over a large table (measured in
bench/admin_bench.py, figures in docs/performance.md):

- a constant number of queries whatever the page size: the merchant and assignee are joined,
  the attempts come in one prefetch of a few columns, the filter choices are memoised;
- no exact COUNT over the whole table: `LargeTablePaginator` takes the planner's estimate when
  unfiltered; filtered, an exact count capped at 30 ms (one round trip), else the planner's
  estimate for the filter; no second "full" count, no facets, no date hierarchy;
- filters with fixed choices (no SELECT DISTINCT per page); filters on the unreturned flag
  also say `stuck_since IS NOT NULL`, so the partial worklist indexes serve them;
- search is exact, or a prefix with a trailing `*`, on columns with pattern-opclass indexes,
  one indexed lookup per column combined with UNION ALL (an OR across a join scans the table).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ORDER_VAR, PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from backoffice.csv_stream import stream_csv
from backoffice.paginator import LargeTablePaginator
from orders.causes import CAUSE_CATEGORY, Category, Cause
from orders.labels import choice_labels
from orders.models import Merchant, Order, PaymentAttempt, RecheckPolicy
from orders.selectors import orders_visible_to
from orders.filters import AGE_CHOICES
from orders.snapshots import AGE_BUCKETS, age_bucket_q
from orders.states import AttemptStatus

# --- choices of the filters ------------------------------------------------------------------
# Merchants and providers are few and change rarely: one process-local memo, refreshed every
# CHOICES_SECONDS, keeps them out of every page's query count (a database cache would cost a
# query per page, and several on a miss).

CHOICES_SECONDS = 600
MAX_MERCHANT_CHOICES = 500
# Replaced whole, never mutated: a reader in another thread always sees a complete memo.
_choices: dict | None = None


def clear_worklist_choices() -> None:
    """Forget the memoised filter choices (tests, and after adding a merchant or provider)."""
    global _choices
    _choices = None


def worklist_choices() -> dict:
    """{"merchants": [(code, name, id), ...], "providers": [name, ...]}, memoised."""
    global _choices
    memo = _choices
    if memo is not None and memo["expires"] > time.monotonic():
        return memo
    merchants = list(Merchant.objects.order_by("code").values_list("code", "name", "id")[:MAX_MERCHANT_CHOICES])
    providers = set(getattr(settings, "PAYMENT_PROVIDERS", {}) or {}) | _seen_providers()
    memo = {"merchants": merchants, "providers": sorted(providers), "expires": time.monotonic() + CHOICES_SECONDS}
    _choices = memo
    return memo


def _seen_providers() -> set[str]:
    """Providers of re-check policies and of payment attempts, in one query.

    The attempts' providers are walked as a loose index scan on attempt_provider_status_idx
    (one index probe per distinct provider) instead of SELECT DISTINCT over every attempt.
    """
    attempts = PaymentAttempt._meta.db_table
    policies = RecheckPolicy._meta.db_table
    sql = f"""
        WITH RECURSIVE seen(provider) AS (
            SELECT (SELECT provider FROM {attempts} ORDER BY provider LIMIT 1)
            UNION ALL
            SELECT (SELECT a.provider FROM {attempts} a WHERE a.provider > seen.provider ORDER BY a.provider LIMIT 1)
            FROM seen WHERE seen.provider IS NOT NULL
        )
        SELECT provider FROM seen WHERE provider IS NOT NULL
        UNION
        SELECT provider FROM {policies}
    """
    with connections[PaymentAttempt.objects.db].cursor() as cursor:
        cursor.execute(sql)
        return {row[0] for row in cursor.fetchall() if row[0]}


# --- filters ---------------------------------------------------------------------------------
# The parameter names are part of the interface: the dashboard and bookmarks link with them.


class UnreturnedFilter(admin.SimpleListFilter):
    title = gettext_lazy("unreturned")
    parameter_name = "unreturned"

    def lookups(self, request, model_admin):
        return [("yes", gettext_lazy("Yes")), ("no", gettext_lazy("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(stuck_since__isnull=False)
        if self.value() == "no":
            return queryset.filter(stuck_since__isnull=True)
        return queryset


class FlagChoicesFilter(admin.ChoicesFieldListFilter):
    """Cause and category (`stuck_cause__exact=...`): a cause is set only on flagged orders
    (a check constraint says so), so saying `stuck_since IS NOT NULL` as well changes no
    result but lets the partial indexes on flagged orders serve the filter."""

    def queryset(self, request, queryset):
        queryset = super().queryset(request, queryset)
        values = self.used_parameters.get(self.lookup_kwarg)
        if isinstance(values, str):
            values = [values]
        if values and any(values):
            queryset = queryset.filter(stuck_since__isnull=False)
        return queryset


class AgeFilter(admin.SimpleListFilter):
    title = gettext_lazy("unreturned for")
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return AGE_CHOICES

    def queryset(self, request, queryset):
        if self.value() in AGE_BUCKETS:
            return queryset.filter(age_bucket_q(self.value(), now=timezone.now()))
        return queryset


class ProviderFilter(admin.SimpleListFilter):
    """Orders with an attempt at the provider. Choices: configured providers, providers of
    re-check policies and providers seen in attempts (memoised), never a DISTINCT per page."""

    title = gettext_lazy("provider")
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(name, name) for name in worklist_choices()["providers"]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(pk__in=PaymentAttempt.objects.filter(provider=self.value()).values("order_id"))
        return queryset


class MerchantFilter(admin.SimpleListFilter):
    """`merchant=<code>`: a text input with a <datalist> of merchants (no script, no CDN);
    the browser completes codes and names as the user types."""

    title = gettext_lazy("merchant")
    parameter_name = "merchant"
    template = "admin/orders/order/worklist_merchant_filter.html"

    def lookups(self, request, model_admin):
        return [(code, name) for code, name, _id in worklist_choices()["merchants"]]

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        code = self.value()
        if not code:
            return queryset
        ids = {c: pk for c, _name, pk in worklist_choices()["merchants"]}
        # The memoised id avoids a join; a merchant added since falls back to the code.
        return queryset.filter(merchant_id=ids[code]) if code in ids else queryset.filter(merchant__code=code)

    def choices(self, changelist):
        # The form resubmits every other current parameter, and starts again at page 1.
        self.hidden_params = sorted(
            (k, v) for k, v in changelist.params.items() if k not in (self.parameter_name, PAGE_VAR)
        )
        self.current_name = dict(self.lookup_choices).get(self.value() or "", "")
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("All"),
        }


class AssigneeFilter(admin.SimpleListFilter):
    title = gettext_lazy("assignee")
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return [("me", gettext_lazy("Assigned to me")), ("none", gettext_lazy("Unassigned"))]

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(assignee_id=request.user.pk)
        if self.value() == "none":
            return queryset.filter(assignee__isnull=True)
        return queryset


# The ready-made worklists above the list: (key, label, parameters).
WORKLIST_VIEWS: list[tuple[str, object, dict[str, str]]] = [
    ("unreturned", gettext_lazy("All unreturned"), {"unreturned": "yes"}),
    ("unknown", gettext_lazy("Unknown results"), {"stuck_cause__exact": Cause.RESULT_UNKNOWN.value}),
    ("paid", gettext_lazy("Paid but not confirmed"), {"status__exact": "paid", "unreturned": "yes"}),
    ("review", gettext_lazy("Needs review"), {"needs_review__exact": "1"}),
    ("mine", gettext_lazy("Mine"), {"assignee": "me"}),
]
# Parameters that do not change which orders a view holds.
_VIEW_NEUTRAL = {"o", "q", "_changelist_filters"}


# --- the changelist --------------------------------------------------------------------------


class WorklistChangeList(ChangeList):
    """Django's ChangeList plus what the worklist template shows: the kind of count, page
    links that never jump to the end of an estimate, the ready-made views, the export link."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.prefetch_related(attempts_prefetch())

    def get_ordering_field(self, field_name):
        # Django shows sort links only for `sortable_by` but obeys any `o=` in the URL.
        if field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_ordering(self, request, queryset):
        if ORDER_VAR in self.params and not self._sorts_by_a_column():
            # An `o=` naming no sortable column keeps the list's own order (not just "-pk").
            params, self.params = self.params, {k: v for k, v in self.params.items() if k != ORDER_VAR}
            try:
                return super().get_ordering(request, queryset)
            finally:
                self.params = params
        return super().get_ordering(request, queryset)

    def _sorts_by_a_column(self) -> bool:
        for part in str(self.params.get(ORDER_VAR, "")).split("."):
            try:
                if self.get_ordering_field(self.list_display[int(part.rpartition("-")[2])]):
                    return True
            except (IndexError, ValueError):
                continue
        return False

    @property
    def count_kind(self) -> str:
        return getattr(self.paginator, "count_kind", "exact")

    def count_label(self) -> str:
        n = self.result_count
        number = formats.number_format(n, force_grouping=True)
        noun = Order._meta.verbose_name if n == 1 else Order._meta.verbose_name_plural
        if self.count_kind == "estimate":
            return _("about %(count)s %(orders)s") % {"count": number, "orders": noun}
        if self.count_kind == "capped":
            return _("%(count)s+ %(orders)s") % {"count": number, "orders": noun}
        return ngettext("%(count)s order", "%(count)s orders", n) % {"count": number}

    def page_links(self) -> list[dict]:
        """Numbered links when the count is exact; first / previous / next when it is not,
        since the end of an estimate is neither known nor cheap to reach."""
        if not self.multi_page or (self.show_all and self.can_show_all):
            return []
        links = []
        if self.count_kind == "exact":
            for number in self.paginator.get_elided_page_range(self.page_num, on_each_side=2, on_ends=1):
                if number == self.paginator.ELLIPSIS:
                    links.append({"ellipsis": True, "label": number})
                else:
                    links.append({"label": formats.number_format(number), "current": number == self.page_num,
                                  "url": self.get_query_string({PAGE_VAR: number})})
            return links
        if self.page_num > 2:
            links.append({"label": _("First"), "url": self.get_query_string({PAGE_VAR: 1})})
        if self.page_num > 1:
            links.append({"label": _("‹ Previous"), "url": self.get_query_string({PAGE_VAR: self.page_num - 1})})
        links.append({"label": _("page %(number)s") % {"number": formats.number_format(self.page_num)},
                      "current": True})
        if len(self.result_list) >= self.list_per_page:  # the rows are fetched for the table anyway
            links.append({"label": _("Next ›"), "url": self.get_query_string({PAGE_VAR: self.page_num + 1})})
        return links

    def worklist_views(self) -> list[dict]:
        current = {k: v for k, v in self.params.items() if k not in _VIEW_NEUTRAL}
        return [
            {"key": key, "label": label, "url": "?" + urlencode(params), "active": current == params}
            for key, label, params in WORKLIST_VIEWS
        ]

    def clear_search_url(self) -> str:
        return self.get_query_string({"q": None})

    def export_url(self) -> str:
        return reverse(f"{self.model_admin.admin_site.name}:orders_order_export") + self.get_query_string()


class ExportChangeList(WorklistChangeList):
    """The same filters, search and ordering, without counting or paging."""

    def get_results(self, request):
        self.result_count = self.full_result_count = None
        self.paginator = None


def attempts_prefetch() -> Prefetch:
    """Each order's attempts, newest first, with only the columns the worklist shows."""
    return Prefetch(
        "attempts",
        queryset=PaymentAttempt.objects.only(
            "id", "order_id", "provider", "status", "created_at", "check_count", "last_checked_at", "last_error_code"
        ).order_by("-created_at", "-id"),
        to_attr="worklist_attempts",
    )


# --- cells -----------------------------------------------------------------------------------


def age_bucket(order: Order, now) -> str | None:
    if order.stuck_since is None:
        return None
    age = now - order.stuck_since
    for code, (low, high) in AGE_BUCKETS.items():
        if age >= low and (high is None or age < high):
            return code
    return "lt15m"  # flagged "in the future": clocks of two machines disagree


def short_duration(seconds: float) -> str:
    minutes = max(int(seconds // 60), 0)
    if minutes < 60:
        return _("%(minutes)d min") % {"minutes": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}
    days, hours = divmod(hours, 24)
    return _("%(days)d d %(hours)d h") % {"days": days, "hours": hours}


def latest_attempt(order: Order) -> PaymentAttempt | None:
    attempts = getattr(order, "worklist_attempts", None)
    if attempts is None:
        attempts = list(order.attempts.order_by("-created_at", "-id"))
    return attempts[0] if attempts else None


def last_checked_attempt(order: Order) -> PaymentAttempt | None:
    attempts = getattr(order, "worklist_attempts", None)
    if attempts is None:
        attempts = list(order.attempts.all())
    checked = [a for a in attempts if a.last_checked_at is not None]
    return max(checked, key=lambda a: (a.last_checked_at, a.pk)) if checked else None


def check_outcome(attempt: PaymentAttempt | None) -> tuple[str, bool]:
    """(text, is_error) of the last check of an attempt, from the attempt's own columns."""
    if attempt is None:
        return "", False
    if attempt.last_error_code:
        return attempt.last_error_code, True
    return AttemptStatus(attempt.status).label if attempt.status in AttemptStatus.values else attempt.status, False


def _local(value) -> str:
    # ISO-like and short: reads the same in every language and sorts by eye.
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i") if value else ""


# --- the mixin -------------------------------------------------------------------------------


class WorklistMixin:
    """Columns, filters, search, ready-made views, paging and CSV export of the staff OrderAdmin."""

    list_display = [
        "reference", "merchant_code", "status", "money", "age", "cause", "provider", "attempt_count", "last_check",
        "review", "assignee",
    ]
    list_display_links = ["reference"]
    list_filter = [
        UnreturnedFilter,
        "status",
        ("stuck_cause", FlagChoicesFilter),
        ("stuck_category", FlagChoicesFilter),
        "needs_review",
        AgeFilter,
        ProviderFilter,
        MerchantFilter,
        AssigneeFilter,
    ]
    list_select_related = ["merchant", "assignee"]
    # Only the age column sorts (see get_sortable_by): no other column has an index to sort by.
    sortable_by = ["age"]
    search_fields = ["reference", "attempts__provider_reference", "customer_email", "customer_phone"]
    search_help_text = gettext_lazy(
        "Exact order reference, provider reference, customer email or phone. "
        "End with * to search by prefix, e.g. ORD-2024*."
    )
    search_prefix_min = 3
    paginator = LargeTablePaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    date_hierarchy = None
    list_per_page = 50
    export_chunk_size = 2000

    # --- queryset, ordering, changelist ------------------------------------------------------

    def get_queryset(self, request):
        queryset = orders_visible_to(request.user)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @staticmethod
    def flagged_only(request) -> bool:
        """Whether the filters keep flagged orders only."""
        params = request.GET
        return bool(params.get("unreturned") == "yes" or params.get("stuck_cause__exact")
                    or params.get("stuck_category__exact") or params.get("age") in AGE_BUCKETS)

    def get_ordering(self, request):
        # Lists of flagged orders show the longest waiting first: the partial worklist indexes
        # (overall, per merchant, per cause) are ordered by stuck_since for this.
        if self.flagged_only(request):
            return ["stuck_since", "id"]
        return super().get_ordering(request)

    def get_sortable_by(self, request):
        # Sorting the whole table by the flag's age would sort a million rows, most without a
        # flag: the age column sorts only lists of flagged orders, which its indexes serve.
        return self.sortable_by if self.flagged_only(request) else ()

    def get_changelist(self, request, **kwargs):
        return ExportChangeList if getattr(request, "_worklist_export", False) else WorklistChangeList

    def get_search_fields(self, request):
        return self.search_fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        prefix = term.endswith("*")
        value = term.rstrip("*").rstrip()
        if prefix and len(value) < self.search_prefix_min:
            messages.warning(request, _("Give at least %(n)d characters before * to search by prefix.")
                             % {"n": self.search_prefix_min})
            return queryset.none(), False
        return queryset.filter(pk__in=search_order_ids(value, prefix=prefix)), False

    # --- columns -----------------------------------------------------------------------------

    @admin.display(description=gettext_lazy("merchant"))
    def merchant_code(self, obj: Order) -> str:
        return obj.merchant.code

    @admin.display(description=gettext_lazy("amount"))
    def money(self, obj: Order) -> str:
        return format_html('<span class="money">{}&nbsp;{}</span>',
                           formats.number_format(obj.amount, 2, force_grouping=True), obj.currency)

    @admin.display(description=gettext_lazy("unreturned for / submitted"), ordering="stuck_since")
    def age(self, obj: Order):
        now = timezone.now()
        bucket = age_bucket(obj, now)
        if bucket is None:
            return format_html('<span class="submitted" title="{}">{}</span>',
                               _("submitted"), _local(obj.submitted_at))
        return format_html(
            '<span class="age age-{}" title="{}">{}</span>',
            bucket, _("unreturned since %(time)s") % {"time": _local(obj.stuck_since)},
            short_duration((now - obj.stuck_since).total_seconds()),
        )

    @admin.display(description=gettext_lazy("cause"))
    def cause(self, obj: Order):
        if not obj.stuck_cause:
            return ""
        category = obj.stuck_category or CAUSE_CATEGORY.get(obj.stuck_cause, "")
        category_label = Category(category).label if category in Category.values else category
        return format_html('<span class="cause-badge category-{}" title="{}">{}</span>',
                           category, category_label, obj.get_stuck_cause_display())

    @admin.display(description=gettext_lazy("provider"))
    def provider(self, obj: Order) -> str:
        attempt = latest_attempt(obj)
        return attempt.provider if attempt else ""

    @admin.display(description=gettext_lazy("attempts"))
    def attempt_count(self, obj: Order) -> int:
        return len(getattr(obj, "worklist_attempts", None) or [])

    @admin.display(description=gettext_lazy("last check"))
    def last_check(self, obj: Order):
        attempt = last_checked_attempt(obj)
        if attempt is None:
            if not getattr(obj, "worklist_attempts", None):
                return ""  # no payment attempt: nothing to check
            return format_html('<span class="quiet">{}</span>', _("not checked"))
        text, is_error = check_outcome(attempt)
        ago = short_duration((timezone.now() - attempt.last_checked_at).total_seconds())
        return format_html(
            '<span class="last-check{}" title="{}">{} <span class="ago">{}</span></span>',
            " check-error" if is_error else "", _local(attempt.last_checked_at), text,
            _("%(time)s ago") % {"time": ago},
        )

    @admin.display(description=gettext_lazy("needs review"))
    def review(self, obj: Order):
        # A mark on the few orders that need a person, rather than a red cross on every other row.
        return format_html('<span class="review-badge">{}</span>', _("review")) if obj.needs_review else ""

    # --- URLs and the CSV export -------------------------------------------------------------

    def get_urls(self):
        export = path("export.csv", self.admin_site.admin_view(self.export_csv_view), name="orders_order_export")
        return [export, *super().get_urls()]

    def export_csv_view(self, request):
        """The orders of the current filter, search and ordering as CSV, streamed in chunks."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request._worklist_export = True
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest(_("These filters are not valid."), content_type="text/plain; charset=utf-8")
        queryset = changelist.queryset.only(*EXPORT_ORDER_FIELDS)
        filename = f"orders-{timezone.localtime():%Y%m%d-%H%M}.csv"
        response = StreamingHttpResponse(
            csv_lines(queryset, chunk_size=self.export_chunk_size), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response


def search_order_ids(value: str, *, prefix: bool) -> QuerySet:
    """Ids of orders matching `value` exactly (or by prefix) on any search column.

    One indexed lookup per column, combined with UNION ALL: an OR across orders and their
    attempts would make PostgreSQL scan the table.
    """
    lookup = "startswith" if prefix else "exact"
    orders = Order.objects.order_by()
    return (
        orders.filter(**{f"reference__{lookup}": value}).values("pk")
        .union(
            orders.filter(**{f"customer_email__{lookup}": value}).values("pk"),
            orders.filter(**{f"customer_phone__{lookup}": value}).values("pk"),
            PaymentAttempt.objects.order_by().filter(**{f"provider_reference__{lookup}": value}).values("order_id"),
            all=True,
        )
    )


# --- CSV -------------------------------------------------------------------------------------


# The order columns the export reads (a million rows: leave addresses and tokens in the table).
EXPORT_ORDER_FIELDS = (
    "id", "reference", "status", "amount", "currency", "submitted_at", "stuck_since", "stuck_cause", "stuck_category",
    "needs_review", "customer_name", "customer_email", "customer_phone",
    "merchant", "merchant__code", "assignee", "assignee__username",
)


def csv_header() -> list[str]:
    return [
        _("reference"), _("merchant"), _("status"), _("amount"), _("currency"), _("submitted"),
        _("unreturned since"), _("unreturned for (minutes)"), _("cause"), _("category"), _("provider"),
        _("attempts"), _("last check"), _("last checked"), _("needs review"), _("assignee"),
        _("customer name"), _("customer email"), _("customer phone"),
    ]


def _labels() -> dict:
    return {**choice_labels(), "yes": _("yes"), "no": _("no")}


def csv_row(order: Order, now, labels: dict) -> list:
    attempt = latest_attempt(order)
    checked = last_checked_attempt(order)
    if checked is None:
        outcome = ""
    else:
        outcome = checked.last_error_code or labels["attempt"].get(checked.status, checked.status)
    age_minutes = int((now - order.stuck_since).total_seconds() // 60) if order.stuck_since else ""
    return [
        order.reference,
        order.merchant.code,
        labels["status"].get(order.status, order.status),
        f"{order.amount}",
        order.currency,
        timezone.localtime(order.submitted_at).isoformat(timespec="seconds"),
        timezone.localtime(order.stuck_since).isoformat(timespec="seconds") if order.stuck_since else "",
        age_minutes,
        labels["cause"].get(order.stuck_cause, order.stuck_cause),
        labels["category"].get(order.stuck_category, order.stuck_category),
        attempt.provider if attempt else "",
        len(getattr(order, "worklist_attempts", None) or []),
        outcome,
        timezone.localtime(checked.last_checked_at).isoformat(timespec="seconds") if checked else "",
        labels["yes"] if order.needs_review else labels["no"],
        order.assignee.get_username() if order.assignee_id else "",
        order.customer_name,
        order.customer_email,
        order.customer_phone,
    ]


def csv_lines(queryset: QuerySet, *, chunk_size: int = 2000) -> Iterator[str]:
    now, labels = timezone.now(), _labels()
    return stream_csv(csv_header(), (csv_row(order, now, labels) for order in queryset.iterator(chunk_size=chunk_size)))
