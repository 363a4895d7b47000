"""The staff order page: diagnosis, the merged timeline, the action buttons each group may use,
the pending four-eyes request, and a query count that does not grow with the timeline."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backoffice.order_actions import SINGLE_ACTIONS
from backoffice.roles import STAFF_GROUPS
from orders import services
from orders.actors import Actor
from orders.models import PaymentCheck, ProviderCallback, default_unknown_delays
from orders.states import AttemptStatus
from tests.backoffice.factories import AGENT, LEAD, PAYMENTS, non_staff_in, order_url, staff_in, staff_with_perms
from tests.orders.engine_helpers import pending_order
from tests.orders.factories import MerchantFactory

pytestmark = pytest.mark.django_db


def _stuck_order_with_evidence():
    """A payment_pending order whose unknown attempt started an hour ago, one failed check
    and one refused callback: unreturned with cause result_unknown."""
    now = timezone.now()
    with time_machine.travel(now - timedelta(hours=1), tick=False):
        order, attempt = pending_order(status=AttemptStatus.UNKNOWN)
    PaymentCheck.objects.create(
        attempt=attempt, source=PaymentCheck.Source.SCHEDULED, error_kind=PaymentCheck.ErrorKind.TIMEOUT,
        error_message="read timed out after 2s", checked_at=now - timedelta(minutes=30),
    )
    ProviderCallback.objects.create(
        provider="sandbox", event_id="evt_page_1", attempt=attempt, outcome=ProviderCallback.Outcome.REJECTED,
        signature_valid=False, error="signature mismatch", received_at=now - timedelta(minutes=10),
    )
    return order, attempt


def _section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[start:html.index("</section>", start)]


def test_the_order_page_shows_the_diagnosis_with_evidence_and_the_check_schedule(client):
    order, attempt = _stuck_order_with_evidence()
    client.force_login(staff_in(AGENT))

    response = client.get(order_url(order))

    assert response.status_code == 200
    panel = _section(response.content.decode(), "diagnosis")
    assert "Payment result unknown" in panel
    assert "Network" in panel
    assert attempt.provider_reference in panel  # the evidence names the attempt
    assert f"Check 0 of {len(default_unknown_delays())} at sandbox." in panel  # no policy row: the defaults


def test_an_order_that_is_not_stuck_says_so_in_the_diagnosis_panel(client):
    order, _attempt = pending_order()
    client.force_login(staff_in(AGENT))

    panel = _section(client.get(order_url(order)).content.decode(), "diagnosis")

    assert "Not unreturned" in panel


def test_the_timeline_merges_events_checks_and_callbacks_newest_first(client):
    order, _attempt = _stuck_order_with_evidence()
    staff = staff_in(AGENT)
    services.add_staff_note(order=order, text="Called the customer, no answer.", actor=Actor.staff(staff))
    client.force_login(staff)

    timeline = _section(client.get(order_url(order)).content.decode(), "timeline")

    in_order = ["Called the customer, no answer.", "Callback from sandbox: Rejected (signature)",
                "Check at sandbox failed: Timeout", "Payment attempt started at sandbox.", "Order submitted."]
    positions = [timeline.index(text) for text in in_order]
    assert positions == sorted(positions)
    assert staff.get_username() in timeline  # the note names its author
    assert "kind-note" in timeline and "kind-callback" in timeline and "kind-check" in timeline


def _queries_for_page(client, order) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(order_url(order))
    assert response.status_code == 200
    return len(queries)


def test_the_order_page_query_count_is_bounded_and_does_not_grow_with_the_timeline(
    client, django_assert_max_num_queries
):
    order, attempt = _stuck_order_with_evidence()
    staff = staff_in(LEAD)
    client.force_login(staff)
    client.get(order_url(order))  # warm the session and content-type caches

    with django_assert_max_num_queries(30):
        client.get(order_url(order))
    before = _queries_for_page(client, order)

    for n in range(20):  # each note by another person: authors' names must not cost a query each
        noter = staff_in(AGENT, username=f"noter-{n}")
        services.add_staff_note(order=order, text=f"note {n}", actor=Actor.staff(noter))
        PaymentCheck.objects.create(attempt=attempt, source=PaymentCheck.Source.MANUAL,
                                    reported_status=AttemptStatus.UNKNOWN)
        ProviderCallback.objects.create(provider="sandbox", event_id=f"evt_more_{n}", attempt=attempt,
                                        signature_valid=True)

    assert _queries_for_page(client, order) == before


# --- which buttons each group sees ------------------------------------------------------------------

_GROUP_PERMS = {group: {p.split(".", 1)[1] for p in perms} for group, perms in STAFF_GROUPS.items()}


@pytest.mark.parametrize("group", [AGENT, LEAD, PAYMENTS])
def test_each_group_sees_exactly_the_action_buttons_its_permissions_allow(client, group):
    order, _attempt = pending_order()
    client.force_login(staff_in(group))

    html = client.get(order_url(order)).content.decode()

    for spec in SINGLE_ACTIONS:
        url = order_url(order, spec.url_name)
        shown = f'action="{url}"' in html or f'href="{url}"' in html
        assert shown == (spec.permission in _GROUP_PERMS[group]), spec.url_name
    assert (f'action="{order_url(order, "note")}"' in html) == ("add_note" in _GROUP_PERMS[group])


def test_payments_operations_sees_no_cancel_button(client):
    # Pins the roles so the parametrized test above cannot pass vacuously.
    order, _attempt = pending_order()
    client.force_login(staff_in(PAYMENTS))

    html = client.get(order_url(order)).content.decode()

    assert "Cancel order…" not in html
    assert "Mark paid…" in html


def test_a_staff_member_without_mark_paid_sees_no_mark_paid_button(client):
    order, _attempt = pending_order()
    client.force_login(staff_with_perms("view_order"))

    response = client.get(order_url(order))

    assert response.status_code == 200
    assert "Mark paid…" not in response.content.decode()
    assert order_url(order, "mark_paid") not in response.content.decode()


# --- the pending four-eyes request -------------------------------------------------------------------


@pytest.fixture
def requested():
    merchant = MerchantFactory(mark_paid_approval_above=Decimal("100.00"))
    order, attempt = pending_order(merchant=merchant, amount=Decimal("500.00"))
    requester = staff_in(LEAD, username="lead-a")
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                                          reason="Bank portal shows the transfer",
                                          actor=Actor.staff(requester)).approval
    return order, approval, requester


def test_the_requester_sees_the_waiting_request_without_approve_buttons(client, requested):
    order, approval, requester = requested
    client.force_login(requester)

    panel = _section(client.get(order_url(order)).content.decode(), "pending-approval")

    assert "Bank portal shows the transfer" in panel
    assert "Approve and mark paid" not in panel
    assert "another staff member must decide it" in panel


def test_another_lead_sees_approve_and_reject_buttons(client, requested):
    order, approval, _requester = requested
    client.force_login(staff_in(LEAD, username="lead-b"))

    panel = _section(client.get(order_url(order)).content.decode(), "pending-approval")

    assert "Approve and mark paid" in panel
    assert "Reject" in panel
    assert f'action="/admin/orders/order/approvals/{approval.pk}/decide/"' in panel


def test_an_agent_without_approve_permission_sees_the_request_but_no_buttons(client, requested):
    order, _approval, _requester = requested
    client.force_login(staff_in(AGENT))

    panel = _section(client.get(order_url(order)).content.decode(), "pending-approval")

    assert "Bank portal shows the transfer" in panel
    assert "Approve and mark paid" not in panel


# --- who may open the page ---------------------------------------------------------------------------


def test_a_user_who_is_not_staff_is_sent_to_the_login_page_even_in_a_staff_group(client):
    order, _attempt = pending_order()
    client.force_login(non_staff_in(LEAD))

    response = client.get(order_url(order))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_order_that_does_not_exist_answers_404(client):
    client.force_login(staff_in(AGENT))

    response = client.get("/admin/orders/order/987654/change/")

    assert response.status_code == 404


def test_the_order_page_links_the_customers_status_page(client):
    from orders.status_links import order_for_token

    order, _attempt = pending_order()
    client.force_login(staff_in(AGENT))

    html = client.get(order_url(order)).content.decode()

    token = html.split('href="/track/', 1)[1].split("/", 1)[0]
    assert order_for_token(token) == order
