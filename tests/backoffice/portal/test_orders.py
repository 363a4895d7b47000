"""The portal's orders: the list with the API's filters, keyset pages, the order page, check now."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orders import services
from orders.actors import Actor
from orders.causes import Cause
from orders.models import Order
from orders.recheck import CheckReport, RecheckReport
from support.models import MessageVisibility, TicketSource
from support.services import add_message, open_ticket
from tests.backoffice.portal.conftest import portal_url, queries_of
from tests.orders.engine_helpers import ENGINE_ACTOR, flag_order, new_order, pending_order

pytestmark = pytest.mark.django_db


def listed(client, merchant, query: str = "") -> list[int]:
    response = client.get(portal_url("orders", merchant) + (f"?{query}" if query else ""))
    assert response.status_code == 200, response.content[:500]
    return [order.pk for order in response.context["page"].rows]


@pytest.fixture
def shop(merchant):
    """A handful of orders of the merchant in different states, and one of another merchant."""
    submitted = new_order(merchant=merchant, reference="JT-0001")
    pending, _attempt = pending_order(merchant=merchant, reference="JT-0002")
    unknown, _attempt = pending_order(merchant=merchant, reference="JT-0003", provider="alipay")
    flag_order(unknown, Cause.RESULT_UNKNOWN)
    declined = new_order(merchant=merchant, reference="JT-0004")
    flag_order(declined, Cause.NO_PAYMENT_STARTED)
    return {"submitted": submitted, "pending": pending, "unknown": unknown, "declined": declined}


# --- the list and its filters ---------------------------------------------------------------------


def test_the_list_shows_the_merchants_orders_newest_first(as_user, merchant, other_merchant, viewer, shop):
    new_order(merchant=other_merchant, reference="OTHER-1")
    ids = listed(as_user(viewer), merchant)
    assert ids == list(Order.objects.filter(merchant=merchant).order_by("-submitted_at", "-id")
                       .values_list("pk", flat=True))


QUERIES = [
    "cause=result_unknown",
    "category=customer",
    "unreturned=true",
    "unreturned=false",
    "status=submitted&status=payment_pending",
    "status=payment_pending",
    "age=lt15m",
    "age=gt24h",
    "provider=alipay",
    "search=JT-0002",
    "search=wang.fang@example.com",
    "created_after=2000-01-01",
    "created_before=2000-01-01",
    "unreturned=true&category=network",
]


@pytest.mark.parametrize("query", QUERIES)
def test_a_filter_selects_the_same_orders_as_the_api(as_user, merchant, other_merchant, manager, shop, query):
    other, _attempt = pending_order(merchant=other_merchant, provider="alipay")
    flag_order(other, Cause.RESULT_UNKNOWN)
    api = APIClient()
    api.force_authenticate(manager)
    api_ids = [row["id"] for row in api.get(f"/api/v1/orders/?{query}").json()["results"]]

    assert listed(as_user(manager), merchant, query) == api_ids


@pytest.mark.parametrize("query", ["cause=not-a-cause", "age=forever", "unreturned=perhaps&status=lost"])
def test_an_invalid_filter_is_refused_with_400_as_the_api_does(as_user, merchant, manager, shop, query):
    api = APIClient()
    api.force_authenticate(manager)
    assert api.get(f"/api/v1/orders/?{query}").status_code == 400

    response = as_user(manager).get(portal_url("orders", merchant) + f"?{query}")

    assert response.status_code == 400
    assert "Some filters are not valid" in response.content.decode()
    assert "page" not in response.context


def test_the_merchant_filter_is_not_offered_because_the_url_fixes_the_merchant(as_user, merchant, viewer, shop):
    response = as_user(viewer).get(portal_url("orders", merchant) + "?merchant=globex")
    assert "merchant" not in response.context["form"].fields
    assert len(response.context["page"].rows) == 4


def test_the_filter_form_keeps_the_chosen_values(as_user, merchant, viewer, shop):
    body = as_user(viewer).get(portal_url("orders", merchant) + "?cause=result_unknown").content.decode()
    assert '<option value="result_unknown" selected>' in body


def test_an_order_link_carries_the_list_query_back(as_user, merchant, viewer, shop):
    client = as_user(viewer)
    body = client.get(portal_url("orders", merchant) + "?cause=result_unknown").content.decode()
    assert "?back=cause%3Dresult_unknown" in body
    detail = client.get(portal_url("order", merchant, order_id=shop["unknown"].pk) + "?back=cause%3Dresult_unknown")
    assert portal_url("orders", merchant) + "?cause=result_unknown" in detail.content.decode()


def test_pages_follow_each_other_without_gaps_or_repeats(as_user, merchant, viewer):
    now = timezone.now()
    created = [new_order(merchant=merchant, submitted_at=now - timedelta(minutes=i)).pk for i in range(7)]
    client = as_user(viewer)
    seen, query = [], "page_size=3"
    pages = []
    while True:
        response = client.get(portal_url("orders", merchant) + f"?{query}")
        page = response.context["page"]
        pages.append([o.pk for o in page.rows])
        seen += pages[-1]
        if not page.next_cursor:
            break
        query = response.context["next_query"]
    assert seen == created
    assert [len(p) for p in pages] == [3, 3, 1]

    back = client.get(portal_url("orders", merchant) + "?" + response.context["previous_query"])
    assert [o.pk for o in back.context["page"].rows] == pages[1]


def test_a_cursor_we_did_not_make_shows_the_first_page(as_user, merchant, viewer, shop):
    assert listed(as_user(viewer), merchant, "cursor=bm9uc2Vuc2U") == listed(as_user(viewer), merchant)


def test_the_list_counts_its_orders_up_to_a_cap(as_user, merchant, viewer, shop, monkeypatch):
    monkeypatch.setattr("backoffice.portal.pagination.COUNT_CAP", 3)
    response = as_user(viewer).get(portal_url("orders", merchant))
    assert response.context["page"].total_capped
    assert "More than 3 orders" in response.content.decode()


def _orders_with_flags(merchant, count: int) -> None:
    for index in range(count):
        order = new_order(merchant=merchant)
        if index % 2:
            flag_order(order, Cause.NO_PAYMENT_STARTED)


def test_the_list_runs_as_many_queries_for_20_rows_as_for_2(as_user, merchant, viewer, django_assert_num_queries):
    client = as_user(viewer)
    _orders_with_flags(merchant, 2)
    expected = queries_of(lambda: client.get(portal_url("orders", merchant)))
    _orders_with_flags(merchant, 18)
    with django_assert_num_queries(expected):
        response = client.get(portal_url("orders", merchant))
    assert len(response.context["page"].rows) == 20


# --- one order ----------------------------------------------------------------------------------


def test_the_order_page_explains_the_cause_in_the_merchants_words(as_user, merchant, viewer):
    order = new_order(merchant=merchant)
    # Submitted an hour ago without a payment: the diagnosis computed now finds the cause.
    Order.objects.filter(pk=order.pk).update(status_changed_at=timezone.now() - timedelta(hours=1),
                                             submitted_at=timezone.now() - timedelta(hours=1))

    response = as_user(viewer).get(portal_url("order", merchant, order_id=order.pk))

    body = response.content.decode()
    assert response.context["diagnosis"]["cause"] == Cause.NO_PAYMENT_STARTED
    assert "No payment started" in body and "What we see" in body
    assert "Contact the customer if you want the sale" in body


def test_a_flag_the_evidence_no_longer_explains_still_shows_its_cause(as_user, merchant, viewer, shop):
    body = as_user(viewer).get(portal_url("order", merchant, order_id=shop["declined"].pk)).content.decode()
    assert "No payment started" in body
    assert "Contact the customer if you want the sale" in body


def test_an_order_that_is_not_stuck_says_so(as_user, merchant, viewer, shop):
    body = as_user(viewer).get(portal_url("order", merchant, order_id=shop["pending"].pk)).content.decode()
    assert "Nothing is holding this order up." in body


def test_the_timeline_never_shows_internal_entries(as_user, merchant, operator, shop):
    order = shop["unknown"]
    services.add_staff_note(order=order, text="STAFF-ONLY-NOTE about the customer", actor=ENGINE_ACTOR)
    ticket = open_ticket(order=order, subject="Stuck", source=TicketSource.STAFF, actor=ENGINE_ACTOR,
                         body="INTERNAL-TICKET-NOTE", visibility=MessageVisibility.INTERNAL)
    add_message(ticket=ticket, body="A note for the merchant", visibility=MessageVisibility.MERCHANT,
                actor=Actor.system("support"))

    response = as_user(operator).get(portal_url("order", merchant, order_id=order.pk))

    body = response.content.decode()
    assert "STAFF-ONLY-NOTE" not in body and "INTERNAL-TICKET-NOTE" not in body
    assert "A note for the merchant" in body
    assert all(not entry.internal for entry in response.context["timeline"])


def test_the_order_page_links_its_open_ticket_instead_of_offering_a_new_one(as_user, merchant, operator, shop):
    ticket = open_ticket(order=shop["unknown"], subject="Stuck", source=TicketSource.STAFF, actor=ENGINE_ACTOR)
    body = as_user(operator).get(portal_url("order", merchant, order_id=shop["unknown"].pk)).content.decode()
    assert portal_url("ticket", merchant, ticket_id=ticket.pk) in body
    assert portal_url("ticket_new", merchant) + f"?order={shop['unknown'].pk}" not in body


def test_a_viewer_sees_no_buttons(as_user, merchant, viewer, shop):
    body = as_user(viewer).get(portal_url("order", merchant, order_id=shop["unknown"].pk)).content.decode()
    assert portal_url("order_check_now", merchant, order_id=shop["unknown"].pk) not in body
    assert "Open a ticket" not in body


def test_check_now_is_offered_only_with_a_payment_waiting(as_user, merchant, operator, shop):
    client = as_user(operator)
    waiting = client.get(portal_url("order", merchant, order_id=shop["pending"].pk)).content.decode()
    nothing = client.get(portal_url("order", merchant, order_id=shop["submitted"].pk)).content.decode()
    assert "Check now" in waiting
    assert "Check now" not in nothing


def test_check_now_asks_the_service_as_the_merchant_user(as_user, merchant, operator, shop, monkeypatch):
    calls = []

    def fake_check(order_id, *, actor):
        calls.append((order_id, actor))
        report = RecheckReport()
        report.add(CheckReport(attempt_id=1, provider="sandbox", reference="sbx_1", reported_status="succeeded",
                               changed=True, checked=True))
        return report

    monkeypatch.setattr("backoffice.portal.order_views.check_order_now", fake_check)
    response = as_user(operator).post(portal_url("order_check_now", merchant, order_id=shop["pending"].pk),
                                      follow=True)

    assert calls == [(shop["pending"].pk, Actor.merchant(operator))]
    assert response.redirect_chain[-1][0] == portal_url("order", merchant, order_id=shop["pending"].pk)
    assert "sandbox says payment sbx_1 is Succeeded; the order is updated." in response.content.decode()


def test_check_now_reports_a_provider_that_does_not_answer(as_user, merchant, operator, shop, monkeypatch):
    def fake_check(order_id, *, actor):
        report = RecheckReport()
        report.add(CheckReport(attempt_id=1, provider="sandbox", reference="sbx_1", error="timeout",
                               provider_error=True))
        return report

    monkeypatch.setattr("backoffice.portal.order_views.check_order_now", fake_check)
    response = as_user(operator).post(portal_url("order_check_now", merchant, order_id=shop["pending"].pk),
                                      follow=True)
    assert "sandbox did not answer about payment sbx_1 (timeout)" in response.content.decode()


def test_check_now_on_an_order_without_open_payment_changes_nothing(as_user, merchant, operator, shop):
    order = shop["submitted"]
    response = as_user(operator).post(portal_url("order_check_now", merchant, order_id=order.pk), follow=True)
    assert "there is nothing to check" in response.content.decode()
    assert Order.objects.get(pk=order.pk).status == order.status
