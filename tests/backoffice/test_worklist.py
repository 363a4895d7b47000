"""The order worklist (backoffice/worklist.py): filters, search, query counts, paging and
the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from backoffice.paginator import LargeTablePaginator
from backoffice.worklist import WorklistMixin, clear_worklist_choices
from orders.causes import CAUSE_CATEGORY, Cause
from orders.models import Order
from tests.orders.factories import (
    MerchantFactory,
    OrderFactory,
    PaymentAttemptFactory,
    StaffUserFactory,
    UserFactory,
    order_in_status,
)

pytestmark = pytest.mark.django_db

URL = reverse("admin:orders_order_changelist")
EXPORT_URL = reverse("admin:orders_order_export")


@pytest.fixture(autouse=True)
def fresh_choices():
    clear_worklist_choices()
    yield
    clear_worklist_choices()


@pytest.fixture
def agent(client):
    user = StaffUserFactory(username="agent-worklist")
    user.groups.add(Group.objects.get(name="Support agent"))
    client.force_login(user)
    return user


def flag(order: Order, cause: str, *, ago: timedelta = timedelta(hours=2), **fields) -> Order:
    """Put the unreturned flag on an order as the sweep would (the flag is not a status)."""
    Order.objects.filter(pk=order.pk).update(
        stuck_since=timezone.now() - ago, stuck_cause=cause, stuck_category=CAUSE_CATEGORY[cause], **fields
    )
    order.refresh_from_db()
    return order


def references(response) -> set[str]:
    return {order.reference for order in response.context["cl"].result_list}


@pytest.fixture
def orders(db):
    """A small cast: one order per case a filter should tell apart."""
    acme, globex = MerchantFactory(code="acme", name="Acme Shop"), MerchantFactory(code="globex", name="Globex")
    plain = OrderFactory(merchant=acme, reference="PLAIN-1", customer_email="plain@example.com",
                         customer_phone="+86 138 0000 0001")
    unknown = flag(order_in_status("payment_pending", merchant=acme, reference="UNKNOWN-1"), Cause.RESULT_UNKNOWN,
                   ago=timedelta(minutes=5))
    paid = flag(order_in_status("paid", merchant=globex, reference="PAID-1"), Cause.PROCESSING_ERROR,
                ago=timedelta(hours=30))
    review = flag(order_in_status("payment_pending", merchant=globex, reference="REVIEW-1"),
                  Cause.AWAITING_CUSTOMER_ACTION, ago=timedelta(hours=3), needs_review=True)
    PaymentAttemptFactory(order=plain, provider="otherpay", provider_reference="op_123456")
    return {"plain": plain, "unknown": unknown, "paid": paid, "review": review}


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"plain", "unknown", "paid", "review"}),
        ("unreturned=yes", {"unknown", "paid", "review"}),
        ("unreturned=no", {"plain"}),
        ("status__exact=paid", {"paid"}),
        ("status__exact=submitted", {"plain"}),
        ("stuck_cause__exact=result_unknown", {"unknown"}),
        ("stuck_category__exact=customer", {"review"}),
        ("stuck_category__exact=system", {"paid"}),
        ("needs_review__exact=1", {"review"}),
        ("needs_review__exact=0", {"plain", "unknown", "paid"}),
        ("provider=otherpay", {"plain"}),
        ("provider=sandbox", {"unknown", "paid", "review"}),
        ("merchant=acme", {"plain", "unknown"}),
        ("merchant=globex", {"paid", "review"}),
        ("merchant=nobody", set()),
        ("age=lt15m", {"unknown"}),
        ("age=1h-6h", {"review"}),
        ("age=gt24h", {"paid"}),
        ("age=15m-1h", set()),
        ("status__exact=paid&unreturned=yes", {"paid"}),
        ("unreturned=yes&merchant=globex&stuck_category__exact=customer", {"review"}),
    ],
)
def test_each_filter_keeps_its_orders(client, agent, orders, query, expected):
    response = client.get(f"{URL}?{query}")
    assert response.status_code == 200
    assert references(response) == {orders[name].reference for name in expected}


def test_mine_shows_the_orders_assigned_to_the_user(client, agent, orders):
    Order.objects.filter(pk=orders["review"].pk).update(assignee=agent)
    Order.objects.filter(pk=orders["paid"].pk).update(assignee=UserFactory())
    assert references(client.get(f"{URL}?assignee=me")) == {"REVIEW-1"}
    assert references(client.get(f"{URL}?assignee=none")) == {"PLAIN-1", "UNKNOWN-1"}


def test_unreturned_lists_show_the_longest_waiting_first(client, agent, orders):
    response = client.get(f"{URL}?unreturned=yes")
    assert [o.reference for o in response.context["cl"].result_list] == ["PAID-1", "REVIEW-1", "UNKNOWN-1"]


def test_only_lists_of_flagged_orders_sort_by_age(client, agent, orders):
    # Column 5 is the age (after the action checkbox): newest flag first, when asked.
    response = client.get(f"{URL}?unreturned=yes&o=-5")
    assert [o.reference for o in response.context["cl"].result_list] == ["UNKNOWN-1", "REVIEW-1", "PAID-1"]
    assert "o=-5" in response.content.decode() or "o=5" in response.content.decode()
    # Unfiltered, sorting by the flag would sort the whole table: the parameter is ignored.
    response = client.get(f"{URL}?o=5")
    assert response.context["cl"].sortable_by == ()
    assert response.context["cl"].get_ordering(response.wsgi_request, Order.objects.all()) == ["-submitted_at", "-id"]


def test_filter_choices_are_fixed_and_include_configured_providers(client, agent, orders, settings):
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "configured-only": {"adapter": "http"}}
    clear_worklist_choices()
    response = client.get(URL)
    specs = {spec.parameter_name: spec for spec in response.context["cl"].filter_specs
             if hasattr(spec, "parameter_name")}
    providers = [value for value, _label in specs["provider"].lookup_choices]
    assert {"configured-only", "otherpay", "sandbox"} <= set(providers)
    content = response.content.decode()
    # The merchant filter is an input with a datalist, and keeps the other parameters.
    assert 'list="worklist-merchants"' in content
    assert '<option value="acme">Acme Shop</option>' in content


def test_ready_made_views_link_with_the_dashboard_parameters(client, agent, orders):
    response = client.get(f"{URL}?status__exact=paid&unreturned=yes")
    views = {view["key"]: view for view in response.context["cl"].worklist_views()}
    assert views["unknown"]["url"] == "?stuck_cause__exact=result_unknown"
    assert views["paid"]["url"] == "?status__exact=paid&unreturned=yes"
    assert views["review"]["url"] == "?needs_review__exact=1"
    assert views["mine"]["url"] == "?assignee=me"
    assert [key for key, view in views.items() if view["active"]] == ["paid"]
    assert "Paid but not confirmed" in response.content.decode()


def test_the_page_has_no_facets_no_date_hierarchy_and_no_full_count(client, agent, orders):
    response = client.get(URL)
    cl = response.context["cl"]
    assert cl.date_hierarchy is None
    assert not cl.add_facets and not cl.is_facets_optional
    assert cl.full_result_count is None
    assert "4 orders" in response.content.decode()


# --- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("UNKNOWN-1", {"UNKNOWN-1"}),
        ("  PAID-1 ", {"PAID-1"}),
        ("op_123456", {"PLAIN-1"}),
        ("plain@example.com", {"PLAIN-1"}),
        ("+86 138 0000 0001", {"PLAIN-1"}),
        ("UNKNOWN", set()),  # exact by default: no partial match
        ("unknown-1", set()),  # exact is exact, case included
        ("UNKNOWN*", {"UNKNOWN-1"}),
        ("op_123*", {"PLAIN-1"}),
        ("plain@*", {"PLAIN-1"}),
        ("+86 138*", {"PLAIN-1"}),
        ("NOPE*", set()),
    ],
)
def test_search_is_exact_or_a_prefix_with_a_trailing_star(client, agent, orders, term, expected):
    response = client.get(URL, {"q": term})
    assert references(response) == expected


def test_a_provider_reference_matching_two_attempts_lists_the_order_once(client, agent, orders):
    PaymentAttemptFactory(order=orders["plain"], provider="otherpay", provider_reference="op_123457")
    response = client.get(URL, {"q": "op_1234*"})
    assert [o.reference for o in response.context["cl"].result_list] == ["PLAIN-1"]


def test_a_prefix_too_short_to_use_an_index_finds_nothing_and_says_why(client, agent, orders):
    response = client.get(URL, {"q": "P*"})
    assert references(response) == set()
    assert "at least 3 characters" in response.content.decode()


def test_prefix_search_is_served_by_the_pattern_index_on_postgres(on_postgres, orders):
    from backoffice.worklist import search_order_ids

    queryset = Order.objects.filter(pk__in=search_order_ids("ORD-2024", prefix=True))
    with connection.cursor() as cursor:
        # Four orders would be scanned anyway: ask whether the index *can* serve the prefix.
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = queryset.explain()
    for index in ("order_reference_search_idx", "order_email_search_idx", "order_phone_search_idx",
                  "attempt_provider_ref_idx"):
        assert index in plan
    assert "~>=~" in plan  # the LIKE prefix became an index range


# --- query counts and paging -----------------------------------------------------------------


@pytest.mark.parametrize("per_page", [10, 100])
@pytest.mark.parametrize("query", ["", "unreturned=yes", "q=ORD*", "provider=sandbox&merchant=acme"])
def test_a_page_costs_the_same_few_queries_whatever_its_size(
    client, agent, django_assert_max_num_queries, monkeypatch, per_page, query
):
    acme = MerchantFactory(code="acme")
    for n in range(120):
        order = OrderFactory(merchant=acme, reference=f"ORD-{n:04d}", assignee=agent if n % 3 else None)
        if n % 2:
            flag(order, Cause.RESULT_UNKNOWN, ago=timedelta(minutes=n))
        for k in range(n % 3):
            PaymentAttemptFactory(order=order, last_checked_at=timezone.now(), last_error_code="timeout" if k else "")
    monkeypatch.setattr(WorklistMixin, "list_per_page", per_page)
    client.get(f"{URL}?{query}")  # the filter choices are memoised once per process
    with django_assert_max_num_queries(10):
        response = client.get(f"{URL}?{query}")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == min(per_page, response.context["cl"].result_count)


def test_columns_show_age_cause_provider_attempts_and_last_check(client, agent, orders):
    attempt = orders["unknown"].attempts.get()
    type(attempt).objects.filter(pk=attempt.pk).update(
        last_checked_at=timezone.now() - timedelta(minutes=3), last_error_code="timeout"
    )
    content = client.get(f"{URL}?unreturned=yes").content.decode()
    assert 'class="age age-lt15m"' in content and 'class="age age-gt24h"' in content
    assert 'class="cause-badge category-network"' in content
    assert "Payment result unknown" in content
    assert 'timeout <span class="ago">3 min ago</span>' in content
    assert "<td class=\"field-provider\">sandbox</td>" in content


def test_a_capped_count_says_so_and_pages_without_a_last_page(client, agent, orders, monkeypatch):
    monkeypatch.setattr(LargeTablePaginator, "cap", 2)
    monkeypatch.setattr(LargeTablePaginator, "_timed_count", lambda *args: None)  # as if PostgreSQL ran out of time
    monkeypatch.setattr(LargeTablePaginator, "_planner_estimate", lambda *args: None)
    monkeypatch.setattr(WorklistMixin, "list_per_page", 1)
    response = client.get(f"{URL}?unreturned=yes")
    cl = response.context["cl"]
    assert cl.count_kind == "capped"
    assert "2+ orders" in response.content.decode()
    labels = [link["label"] for link in cl.page_links()]
    assert labels == ["page 1", "Next ›"]
    # The end of a capped count is unknown: pages past it are asked for, not refused.
    response = client.get(f"{URL}?unreturned=yes&p=3")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
    assert [link["label"] for link in response.context["cl"].page_links()] == ["First", "‹ Previous", "page 3", "Next ›"]
    response = client.get(f"{URL}?unreturned=yes&p=9")
    assert response.status_code == 200 and not response.context["cl"].result_list


def test_a_count_out_of_time_on_postgres_shows_the_planner_estimate(on_postgres, client, agent, orders, monkeypatch):
    monkeypatch.setattr(LargeTablePaginator, "_timed_count", lambda *args: None)
    response = client.get(f"{URL}?unreturned=yes")
    cl = response.context["cl"]
    assert cl.count_kind == "estimate"
    assert f"about {cl.result_count} order" in response.content.decode()


def test_timed_count_on_postgres_counts_in_one_statement_and_restores_the_timeout(on_postgres, orders):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        before = cursor.fetchone()[0]
    paginator = LargeTablePaginator(Order.objects.filter(stuck_since__isnull=False).order_by("pk"), 10)
    assert paginator.count == 3 and paginator.count_kind == "exact"
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        assert cursor.fetchone()[0] == before


def test_a_count_past_its_time_limit_falls_back_to_the_estimate(on_postgres, orders, monkeypatch):
    monkeypatch.setattr(LargeTablePaginator, "count_timeout_ms", 20)
    monkeypatch.setattr(LargeTablePaginator, "cap", 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        before = cursor.fetchone()[0]
    slow = Order.objects.extra(where=["pg_sleep(0.05) IS NOT NULL"]).order_by("pk")
    paginator = LargeTablePaginator(slow, 10)
    assert paginator.count >= 1 and paginator.count_kind == "estimate"
    with connection.cursor() as cursor:  # the transaction is still usable, with its own timeout
        cursor.execute("SELECT current_setting('statement_timeout')")
        assert cursor.fetchone()[0] == before


def test_the_unfiltered_count_on_postgres_is_the_planner_estimate(on_postgres, orders, monkeypatch):
    monkeypatch.setattr(LargeTablePaginator, "cap", 0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders_order")
    paginator = LargeTablePaginator(Order.objects.order_by("pk"), 10)
    assert paginator.count >= 1 and paginator.count_kind == "estimate"


# --- CSV export ------------------------------------------------------------------------------


def read_csv(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


def test_csv_export_streams_the_rows_of_the_current_filter(client, agent, orders):
    response = client.get(f"{EXPORT_URL}?unreturned=yes&merchant=globex")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    header, body = rows[0], rows[1:]
    assert header[:3] == ["reference", "merchant", "status"]
    assert {"customer name", "customer email", "customer phone"} <= set(header)
    assert sorted(row[0] for row in body) == ["PAID-1", "REVIEW-1"]
    paid = next(row for row in body if row[0] == "PAID-1")
    assert paid[header.index("cause")] == "Processing error after payment"
    assert paid[header.index("provider")] == "sandbox"
    assert paid[header.index("amount")] == str(Decimal("128.00"))


def test_csv_export_follows_the_search(client, agent, orders):
    rows = read_csv(client.get(EXPORT_URL, {"q": "plain@example.com"}))
    assert [row[0] for row in rows[1:]] == ["PLAIN-1"]
    assert rows[1][-1] == "+86 138 0000 0001"  # a phone number is not a formula


def test_csv_export_defuses_spreadsheet_formulas(client, agent, orders):
    Order.objects.filter(pk=orders["plain"].pk).update(customer_name="=HYPERLINK(\"http://x\")")
    rows = read_csv(client.get(EXPORT_URL, {"q": "PLAIN-1"}))
    header = rows[0]
    assert rows[1][header.index("customer name")] == "'=HYPERLINK(\"http://x\")"


def test_the_changelist_links_the_export_of_its_filter(client, agent, orders):
    content = client.get(f"{URL}?unreturned=yes").content.decode()
    assert f'href="{EXPORT_URL}?unreturned=yes"' in content


def test_csv_export_needs_view_permission(client, orders):
    client.force_login(StaffUserFactory(username="staff-without-permissions"))
    assert client.get(EXPORT_URL).status_code == 403
    assert client.get(URL).status_code == 403


def test_csv_export_sends_anonymous_users_to_the_login(client, orders):
    response = client.get(EXPORT_URL)
    assert response.status_code == 302 and "login" in response["Location"]
