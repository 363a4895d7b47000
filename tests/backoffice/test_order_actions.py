"""Guarded staff actions in the admin, single and bulk, driven with the test client as staff
in the groups of `backoffice.roles`: permissions, POST-only writes, CSRF, the mark-paid
confirmation step, four eyes end to end, and actor, reason and event on every change."""

from __future__ import annotations

import math
import time
from decimal import Decimal

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from backoffice.order_actions import BULK_CHECK_CHUNK
from orders import services
from orders.actors import Actor
from orders.models import Order, OrderEvent, PaymentApproval, PaymentAttempt, PaymentCheck
from orders.states import AttemptStatus, OrderStatus
from tests.backoffice.factories import (
    AGENT,
    LEAD,
    PAYMENTS,
    form_fields,
    messages_of,
    non_staff_in,
    order_url,
    staff_in,
    staff_with_perms,
)
from tests.orders.engine_helpers import events, fresh, new_order, pay_at_sandbox, pending_order
from tests.orders.engine_helpers import sandbox  # noqa: F401 - fixture
from tests.orders.factories import MerchantFactory, order_in_status

pytestmark = pytest.mark.django_db

Kind = OrderEvent.Kind
CHANGELIST = "/admin/orders/order/"

ACTION_URLS = ["check_now", "mark_paid", "mark_failed", "cancel", "retry_confirmation", "assign_to_me", "note"]


def _state(order: Order) -> tuple:
    """Everything a refused or read-only request must leave as it was."""
    order = fresh(order)
    return (
        order.status, order.assignee_id, order.captured_amount,
        tuple(PaymentAttempt.objects.filter(order=order).order_by("pk").values_list("status", flat=True)),
        OrderEvent.objects.filter(order=order).count(),
        PaymentApproval.objects.filter(order=order).count(),
        PaymentCheck.objects.filter(attempt__order=order).count(),
    )


@pytest.fixture
def lead(client):
    user = staff_in(LEAD, username="lead-a")
    client.force_login(user)
    return user


# --- permissions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("action", ACTION_URLS)
def test_a_staff_member_without_the_actions_permission_gets_403_and_nothing_changes(client, action, method):
    order, _attempt = pending_order()
    client.force_login(staff_with_perms("view_order"))
    before = _state(order)

    response = getattr(client, method)(order_url(order, action),
                                       {"reason": "r", "provider_reference": "X", "text": "t", "confirmed": "yes"})

    assert response.status_code == 403
    assert _state(order) == before


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_staff_member_without_mark_paid_cannot_open_or_submit_mark_paid(client, method):
    order, attempt = pending_order()
    client.force_login(staff_with_perms("view_order", "check_now", "add_note", "cancel_order", "mark_failed"))
    before = _state(order)

    response = getattr(client, method)(order_url(order, "mark_paid"), {
        "provider_reference": attempt.provider_reference, "reason": "paid", "confirmed": "yes"})

    assert response.status_code == 403
    assert _state(order) == before


@pytest.mark.parametrize(("group", "action"), [(PAYMENTS, "cancel"), (PAYMENTS, "assign_to_me")])
def test_a_group_without_the_permission_gets_403(client, group, action):
    order, _attempt = pending_order()
    client.force_login(staff_in(group))
    before = _state(order)

    response = client.post(order_url(order, action), {"reason": "customer asked"})

    assert response.status_code == 403
    assert _state(order) == before


def test_an_agent_cannot_decide_a_mark_paid_request(client):
    order, approval = _requested_above_limit(staff_in(LEAD, username="requester"))
    client.force_login(staff_in(AGENT))

    response = client.post(reverse("admin:orders_order_decide_approval", args=[approval.pk]), {"decision": "approve"})

    assert response.status_code == 403
    assert fresh(approval).status == PaymentApproval.Status.PENDING
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


@pytest.mark.parametrize("action", ACTION_URLS)
def test_an_action_on_an_order_that_does_not_exist_answers_404(client, lead, action):
    response = client.post(reverse(f"admin:orders_order_{action}", args=[987654]), {"reason": "r", "text": "t"})

    assert response.status_code == 404


def test_a_user_who_is_not_staff_is_sent_to_log_in_and_nothing_changes(client):
    order, _attempt = pending_order()
    client.force_login(non_staff_in(LEAD))
    before = _state(order)

    response = client.post(order_url(order, "cancel"), {"reason": "customer asked"})

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert _state(order) == before


# --- writes need POST -------------------------------------------------------------------------------------


def test_get_of_check_now_redirects_to_the_order_without_checking(client, lead, monkeypatch):
    calls = []
    monkeypatch.setattr("backoffice.order_actions.check_order_now", lambda *a, **kw: calls.append(a))
    order, _attempt = pending_order()
    before = _state(order)

    response = client.get(order_url(order, "check_now"))

    assert response.status_code == 302
    assert response["Location"] == order_url(order)
    assert calls == []
    assert _state(order) == before


def test_post_of_check_now_asks_the_provider_and_reports_the_answer(client, lead, sandbox):  # noqa: F811
    sandbox(pending_seconds=60)
    order = new_order()
    attempt = pay_at_sandbox(order)

    response = client.post(order_url(order, "check_now"))

    assert response.status_code == 302
    [check] = PaymentCheck.objects.filter(attempt=attempt)
    assert check.source == PaymentCheck.Source.MANUAL
    assert any("the provider says pending" in m for m in messages_of(response))


@pytest.mark.parametrize("action", ["retry_confirmation", "assign_to_me", "note"])
def test_get_of_a_direct_action_is_refused_and_changes_nothing(client, lead, action):
    order = order_in_status(OrderStatus.PAID)
    before = _state(order)

    response = client.get(order_url(order, action), {"text": "a note in the query string"})

    assert response.status_code == 403
    assert _state(order) == before


def test_get_of_a_decision_is_refused_and_the_request_stays_pending(client):
    order, approval = _requested_above_limit(staff_in(LEAD, username="requester"))
    client.force_login(staff_in(LEAD, username="approver"))

    response = client.get(reverse("admin:orders_order_decide_approval", args=[approval.pk]), {"decision": "approve"})

    assert response.status_code == 403
    assert fresh(approval).status == PaymentApproval.Status.PENDING


@pytest.mark.parametrize("action", ["mark_paid", "mark_failed", "cancel"])
def test_get_of_an_action_with_a_reason_only_shows_its_form(client, lead, action):
    order, _attempt = pending_order()
    before = _state(order)

    response = client.get(order_url(order, action), {"reason": "in the query string", "confirmed": "yes"})

    assert response.status_code == 200
    assert 'name="reason"' in response.content.decode()
    assert _state(order) == before


def test_a_post_without_a_csrf_token_is_refused(lead):
    order, _attempt = pending_order()
    client = Client(enforce_csrf_checks=True)
    client.force_login(lead)
    before = _state(order)

    response = client.post(order_url(order, "cancel"), {"reason": "customer asked"})

    assert response.status_code == 403
    assert _state(order) == before


def test_a_post_with_the_forms_csrf_token_is_accepted(lead):
    order, _attempt = pending_order()
    client = Client(enforce_csrf_checks=True)
    client.force_login(lead)
    fields = form_fields(client.get(order_url(order, "cancel")).content.decode(), order_url(order, "cancel"))
    fields["reason"] = ["customer asked"]

    response = client.post(order_url(order, "cancel"), fields)

    assert response.status_code == 302
    assert fresh(order).status == OrderStatus.CANCELLED


# --- mark paid: form, confirmation with evidence, apply -----------------------------------------------


def test_mark_paid_form_shows_the_orders_evidence(client, lead):
    order, attempt = pending_order()

    response = client.get(order_url(order, "mark_paid"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="provider_reference"' in html and 'name="reason"' in html
    assert 'id="diagnosis"' in html
    assert attempt.provider_reference in html  # the attempts table
    assert 'name="confirmed"' not in html


def test_mark_paid_without_confirmation_shows_the_confirmation_page_and_changes_nothing(client, lead):
    order, attempt = pending_order()
    before = _state(order)

    response = client.post(order_url(order, "mark_paid"), {
        "provider_reference": attempt.provider_reference, "reason": "Bank statement attached to the ticket"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Please confirm" in html
    assert "Yes, I am sure" in html
    assert 'id="diagnosis"' in html and "Payment attempts" in html
    fields = form_fields(html, order_url(order, "mark_paid"))
    assert fields["confirmed"] == ["yes"]
    assert fields["provider_reference"] == [attempt.provider_reference]
    assert fields["reason"] == ["Bank statement attached to the ticket"]
    assert _state(order) == before


def test_mark_paid_confirmed_from_the_confirmation_page_marks_the_order_paid(client, lead):
    order, attempt = pending_order()
    confirmation = client.post(order_url(order, "mark_paid"), {
        "provider_reference": attempt.provider_reference, "reason": "Bank statement attached to the ticket"})

    response = client.post(order_url(order, "mark_paid"),
                           form_fields(confirmation.content.decode(), order_url(order, "mark_paid")))

    assert response.status_code == 302
    assert response["Location"] == order_url(order)
    assert fresh(order).status == OrderStatus.PAID
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    paid = events(order, Kind.STATUS_CHANGED)[-1]
    assert (paid.data["to"], paid.actor_user_id, paid.message) == (
        OrderStatus.PAID, lead.pk, "Bank statement attached to the ticket")
    assert "Order marked paid; confirmation follows." in messages_of(response)


def test_a_refused_mark_paid_shows_why_on_the_form_and_changes_nothing(client, lead):
    order, _attempt = pending_order()
    _other, others_attempt = pending_order()
    before = _state(order)

    response = client.post(order_url(order, "mark_paid"), {
        "provider_reference": others_attempt.provider_reference, "reason": "paid", "confirmed": "yes"})

    assert response.status_code == 200
    assert "belongs to another order" in response.content.decode()
    assert _state(order) == before


def test_mark_paid_without_a_reason_shows_the_form_again(client, lead):
    order, attempt = pending_order()
    before = _state(order)

    response = client.post(order_url(order, "mark_paid"), {
        "provider_reference": attempt.provider_reference, "reason": "", "confirmed": "yes"})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert _state(order) == before


# --- four eyes, end to end -----------------------------------------------------------------------------


def _requested_above_limit(requester):
    merchant = MerchantFactory(mark_paid_approval_above=Decimal("100.00"))
    order, attempt = pending_order(merchant=merchant, amount=Decimal("500.00"))
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                                          reason="Bank portal shows the transfer",
                                          actor=Actor.staff(requester)).approval
    return order, approval


def test_four_eyes_mark_paid_from_request_to_approval():
    merchant = MerchantFactory(mark_paid_approval_above=Decimal("100.00"))
    order, attempt = pending_order(merchant=merchant, amount=Decimal("500.00"))
    lead_a, lead_b = staff_in(LEAD, username="lead-a"), staff_in(LEAD, username="lead-b")
    a, b = Client(), Client()
    a.force_login(lead_a)
    b.force_login(lead_b)
    mark_paid = order_url(order, "mark_paid")

    # Lead A asks: above the limit the order does not change, a request waits.
    confirmation = a.post(mark_paid, {"provider_reference": attempt.provider_reference, "reason": "Transfer seen"})
    response = a.post(mark_paid, form_fields(confirmation.content.decode(), mark_paid))
    assert response.status_code == 302
    assert any("second staff member must approve" in m for m in messages_of(response))
    approval = PaymentApproval.objects.get(order=order)
    assert (approval.status, approval.requested_by_id) == (PaymentApproval.Status.PENDING, lead_a.pk)
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING

    # Lead A sees no approve button, and a forged POST is refused with a message.
    decide = reverse("admin:orders_order_decide_approval", args=[approval.pk])
    assert decide not in a.get(order_url(order)).content.decode()
    response = a.post(decide, {"decision": "approve", "note": "looks fine to me"})
    assert response.status_code == 302
    assert "You asked for this; another staff member must decide it." in messages_of(response)
    assert fresh(approval).status == PaymentApproval.Status.PENDING
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING

    # Lead B approves from the order page's form: the order is paid.
    page = b.get(order_url(order)).content.decode()
    fields = form_fields(page, decide)
    fields.update(decision=["approve"], note=["Checked the bank portal"])
    response = b.post(decide, fields)
    assert response.status_code == 302
    assert "Approved: the order is marked paid." in messages_of(response)
    approval = fresh(approval)
    assert (approval.status, approval.decided_by_id, approval.decision_note) == (
        PaymentApproval.Status.APPROVED, lead_b.pk, "Checked the bank portal")
    assert fresh(order).status == OrderStatus.PAID
    paid = events(order, Kind.STATUS_CHANGED)[-1]
    assert (paid.actor_user_id, paid.message) == (lead_b.pk, "Transfer seen")


def test_rejecting_a_request_without_a_note_is_refused_with_a_message(client):
    order, approval = _requested_above_limit(staff_in(LEAD, username="requester"))
    client.force_login(staff_in(LEAD, username="approver"))

    response = client.post(reverse("admin:orders_order_decide_approval", args=[approval.pk]), {"decision": "reject"})

    assert "Say why you reject the request." in messages_of(response)
    assert fresh(approval).status == PaymentApproval.Status.PENDING


def test_rejecting_a_request_with_a_note_leaves_the_order_unpaid(client):
    order, approval = _requested_above_limit(staff_in(LEAD, username="requester"))
    approver = staff_in(LEAD, username="approver")
    client.force_login(approver)

    response = client.post(reverse("admin:orders_order_decide_approval", args=[approval.pk]),
                           {"decision": "reject", "note": "Receipt is for another order"})

    assert "Rejected." in messages_of(response)
    approval = fresh(approval)
    assert (approval.status, approval.decided_by_id) == (PaymentApproval.Status.REJECTED, approver.pk)
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


# --- the other single-order actions -------------------------------------------------------------------


def test_mark_failed_with_a_reason_fails_the_payment(client, lead):
    order, attempt = pending_order()

    response = client.post(order_url(order, "mark_failed"), {"reason": "Provider says no such payment"})

    assert response.status_code == 302
    assert fresh(order).status == OrderStatus.PAYMENT_FAILED
    assert fresh(attempt).failure_code == "marked_failed_by_staff"


@pytest.mark.parametrize("action", ["mark_failed", "cancel"])
def test_an_action_without_a_reason_shows_the_form_with_an_error(client, lead, action):
    order, _attempt = pending_order()
    before = _state(order)

    response = client.post(order_url(order, action), {"reason": "   "})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert _state(order) == before


def test_cancel_of_a_paid_order_shows_the_refusal_on_the_form(client, lead):
    order = order_in_status(OrderStatus.PAID)
    before = _state(order)

    response = client.post(order_url(order, "cancel"), {"reason": "customer asked"})

    assert response.status_code == 200
    assert "refund it instead of cancelling" in response.content.decode()
    assert _state(order) == before


def test_a_blank_note_is_refused_with_a_message(client, lead):
    order, _attempt = pending_order()
    before = _state(order)

    response = client.post(order_url(order, "note"), {"text": "  "})

    assert response.status_code == 302
    assert "A note cannot be empty." in messages_of(response)
    assert _state(order) == before


def test_retry_confirmation_confirms_a_paid_order(client, lead):
    order, attempt = pending_order()  # the customer data allows confirmation
    services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=Actor.system())
    services.mark_order_paid(attempt=attempt, actor=Actor.system())

    response = client.post(order_url(order, "retry_confirmation"))

    assert response.status_code == 302
    assert "Order confirmed." in messages_of(response)
    order = fresh(order)
    assert order.status == OrderStatus.CONFIRMED
    assert events(order, Kind.STATUS_CHANGED)[-1].actor_user_id == lead.pk


def test_retry_confirmation_that_fails_again_reports_why_and_records_it(client, lead):
    order = order_in_status(OrderStatus.PAID)  # no shipping address: confirmation is blocked

    response = client.post(order_url(order, "retry_confirmation"))

    assert response.status_code == 302
    assert any("shipping address is empty" in m for m in messages_of(response))
    assert fresh(order).status == OrderStatus.PAID
    [failure] = events(order, Kind.CONFIRMATION_FAILED)
    assert failure.actor_user_id == lead.pk


# Every change made from the order page names the person, keeps the reason and adds an event.
RECORDED = [
    ("mark_paid", {"provider_reference": "BANK-9", "reason": "Statement seen", "confirmed": "yes"},
     Kind.STATUS_CHANGED, "Statement seen"),
    ("mark_failed", {"reason": "No such payment"}, Kind.STATUS_CHANGED, "No such payment"),
    ("cancel", {"reason": "Customer withdrew"}, Kind.STATUS_CHANGED, "Customer withdrew"),
    ("note", {"text": "Left a voicemail"}, Kind.NOTE, "Left a voicemail"),
    ("assign_to_me", {}, Kind.ASSIGNED, "Assigned to lead-a."),
]


@pytest.mark.parametrize(("action", "data", "kind", "message"), RECORDED, ids=[r[0] for r in RECORDED])
def test_every_action_records_the_staff_member_the_reason_and_an_event(client, lead, action, data, kind, message):
    order, _attempt = pending_order()
    before = OrderEvent.objects.filter(order=order).count()

    response = client.post(order_url(order, action), data)

    assert response.status_code == 302
    new = list(OrderEvent.objects.filter(order=order).order_by("pk"))[before:]
    assert new, "no event recorded"
    assert all(e.actor_user_id == lead.pk and e.actor_kind == OrderEvent.ActorKind.STAFF for e in new)
    assert new[-1].kind == kind
    assert new[-1].message == message


# --- bulk actions on the worklist -----------------------------------------------------------------------


def _bulk(client, action: str, orders, **extra):
    return client.post(CHANGELIST, {"action": action, "index": 0,
                                    "_selected_action": [o.pk for o in orders], **extra})


def test_bulk_check_now_of_500_orders_is_queued_in_chunks_without_asking_providers(client, lead, monkeypatch):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, *args, **kwargs: queued.append((func, args)))

    def no_provider_calls(*args, **kwargs):
        raise AssertionError("a provider was asked inside the request")

    monkeypatch.setattr("orders.recheck.check_attempts", no_provider_calls)
    merchant = MerchantFactory()
    orders = [pending_order(merchant=merchant)[0] for _ in range(500)]

    started = time.monotonic()
    response = _bulk(client, "bulk_check_now", orders)
    elapsed = time.monotonic() - started

    assert response.status_code == 302
    assert len(queued) == math.ceil(500 / BULK_CHECK_CHUNK) == 5
    assert {func for func, _args in queued} == {"orders.tasks.check_orders_now"}
    chunks = [args[0] for _func, args in queued]
    assert all(len(chunk) <= BULK_CHECK_CHUNK for chunk in chunks)
    assert sorted(pk for chunk in chunks for pk in chunk) == sorted(o.pk for o in orders)
    assert {args[1] for _func, args in queued} == {lead.pk}
    assert not PaymentCheck.objects.exists()
    assert "500 orders with an open payment are queued for a check." in messages_of(response)
    assert elapsed < 5, f"the request took {elapsed:.1f}s"


def test_bulk_check_now_queues_only_orders_with_an_open_payment(client, lead, monkeypatch):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, *args, **kwargs: queued.append(args))
    waiting, _attempt = pending_order()
    paid = order_in_status(OrderStatus.PAID)
    submitted = new_order()

    _bulk(client, "bulk_check_now", [waiting, paid, submitted])

    assert queued == [([waiting.pk], lead.pk)]


def test_the_queued_bulk_check_asks_the_provider_as_the_staff_member(client, lead, sandbox):  # noqa: F811
    sandbox(pending_seconds=60)
    order = new_order()
    attempt = pay_at_sandbox(order)

    _bulk(client, "bulk_check_now", [order])  # django-q runs the task inline in tests

    [check] = PaymentCheck.objects.filter(attempt=attempt)
    assert check.source == PaymentCheck.Source.MANUAL


def test_bulk_assign_to_me_assigns_every_selected_order_with_an_event(client, lead):
    orders = [pending_order()[0] for _ in range(3)]
    untouched, _attempt = pending_order()

    response = _bulk(client, "bulk_assign_to_me", orders)

    assert response.status_code == 302
    assert {fresh(o).assignee_id for o in orders} == {lead.pk}
    assert fresh(untouched).assignee_id is None
    for order in orders:
        [event] = events(order, Kind.ASSIGNED)
        assert event.actor_user_id == lead.pk


def test_bulk_cancel_first_asks_for_a_reason_and_changes_nothing(client, lead):
    orders = [pending_order()[0] for _ in range(3)]
    before = [_state(o) for o in orders]

    response = _bulk(client, "bulk_cancel", orders)

    html = response.content.decode()
    assert response.status_code == 200
    assert "This changes 3 orders" in html
    assert all(o.reference in html for o in orders)
    assert 'name="reason"' in html
    assert [_state(o) for o in orders] == before


def _apply_reason_page(client, page, reason: str):
    # The reason page's form is the one carrying the "apply" field.
    fields = next(f for f in _all_forms(page.content.decode()) if "apply" in f)
    fields["reason"] = [reason]
    return client.post(CHANGELIST, fields)


def _all_forms(html: str) -> list[dict[str, list[str]]]:
    forms, rest = [], html
    while "<form" in rest:
        rest = rest[rest.index("<form"):]
        end = rest.index("</form>") + len("</form>")
        forms.append(form_fields(rest[:end]))
        rest = rest[end:]
    return forms


def test_bulk_cancel_with_a_reason_cancels_each_order_and_records_who_and_why(client, lead):
    orders = [pending_order()[0] for _ in range(3)]
    untouched, _attempt = pending_order()
    page = _bulk(client, "bulk_cancel", orders)

    response = _apply_reason_page(client, page, "Merchant closed these orders")

    assert response.status_code == 302
    assert "3 of 3 orders changed." in messages_of(response)
    for order in orders:
        assert fresh(order).status == OrderStatus.CANCELLED
        cancelled = events(order, Kind.STATUS_CHANGED)[-1]
        assert (cancelled.data["to"], cancelled.actor_user_id, cancelled.message) == (
            OrderStatus.CANCELLED, lead.pk, "Merchant closed these orders")
    assert fresh(untouched).status == OrderStatus.PAYMENT_PENDING


def test_bulk_cancel_without_a_reason_shows_the_page_again(client, lead):
    orders = [pending_order()[0] for _ in range(2)]
    before = [_state(o) for o in orders]
    page = _bulk(client, "bulk_cancel", orders)

    response = _apply_reason_page(client, page, "  ")

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert [_state(o) for o in orders] == before


def test_bulk_cancel_reports_each_refusal_and_cancels_the_rest(client, lead):
    waiting, _attempt = pending_order()
    paid = order_in_status(OrderStatus.PAID)
    page = _bulk(client, "bulk_cancel", [waiting, paid])

    response = _apply_reason_page(client, page, "Clean up")

    shown = messages_of(response)
    assert "1 of 2 orders changed." in shown
    assert any("refund it instead of cancelling" in m for m in shown)
    assert fresh(waiting).status == OrderStatus.CANCELLED
    assert fresh(paid).status == OrderStatus.PAID


def test_bulk_cancel_of_all_matching_orders_across_pages_applies_to_all_of_them(client, lead, monkeypatch):
    monkeypatch.setattr(admin.site._registry[Order], "list_per_page", 2)
    orders = [pending_order()[0] for _ in range(3)]
    on_first_page = orders[-2:]  # newest first

    page = _bulk(client, "bulk_cancel", on_first_page, select_across="1")
    assert "This changes 3 orders" in page.content.decode()
    _apply_reason_page(client, page, "Merchant closed its shop")

    assert {fresh(o).status for o in orders} == {OrderStatus.CANCELLED}


def test_a_bulk_action_the_group_lacks_is_refused_even_when_posted_directly(client):
    client.force_login(staff_in(PAYMENTS))  # no cancel_order
    orders = [pending_order()[0] for _ in range(2)]
    before = [_state(o) for o in orders]

    response = client.post(CHANGELIST, {"action": "bulk_cancel", "_selected_action": [o.pk for o in orders],
                                        "apply": "yes", "reason": "forged second step"})

    assert response.status_code == 302
    assert "No action selected." in messages_of(response)
    assert [_state(o) for o in orders] == before


def test_bulk_mark_failed_applies_the_reason_to_every_order(client, lead):
    orders = [pending_order()[0] for _ in range(2)]
    page = _bulk(client, "bulk_mark_failed", orders)

    _apply_reason_page(client, page, "Provider outage: payments never reached the bank")

    for order in orders:
        assert fresh(order).status == OrderStatus.PAYMENT_FAILED
        failed = events(order, Kind.STATUS_CHANGED)[-1]
        assert (failed.actor_user_id, failed.message) == (lead.pk, "Provider outage: payments never reached the bank")
