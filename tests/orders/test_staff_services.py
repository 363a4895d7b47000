"""Staff resolutions in `orders.services`: notes, assignment, mark paid (with the four-eyes
approval above a merchant's limit), mark failed and cancel. Each records the staff member,
the reason and an event, and refuses what the evidence does not allow, changing nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.exceptions import Conflict, IllegalTransition, ValidationFailed
from orders.models import Order, OrderEvent, PaymentApproval, PaymentAttempt
from orders.states import AttemptStatus, OrderStatus
from tests.orders.engine_helpers import ENGINE_ACTOR, add_attempt, events, fresh, new_order, pending_order
from tests.orders.factories import MerchantFactory, StaffUserFactory, attempt_in_status, order_in_status

pytestmark = pytest.mark.django_db

Kind = OrderEvent.Kind


@pytest.fixture
def staff():
    return StaffUserFactory(username="lead-a")


@pytest.fixture
def other_staff():
    return StaffUserFactory(username="lead-b")


def _snapshot(order: Order) -> tuple:
    """What a refused staff action must leave untouched."""
    order = fresh(order)
    attempts = tuple(
        PaymentAttempt.objects.filter(order=order).order_by("pk").values_list("pk", "status", "failure_code")
    )
    return (order.status, order.captured_amount, order.needs_review, attempts,
            OrderEvent.objects.filter(order=order).count(), PaymentApproval.objects.filter(order=order).count())


def _staff_events(order: Order, user) -> list[OrderEvent]:
    return [e for e in events(order) if e.actor_user_id == user.pk]


def _limited_order(limit: str = "100.00", amount: str = "500.00"):
    merchant = MerchantFactory(mark_paid_approval_above=Decimal(limit))
    return pending_order(merchant=merchant, amount=Decimal(amount))


# --- notes and assignment ------------------------------------------------------------------------


def test_a_staff_note_is_an_event_with_the_staff_member_and_the_text(staff):
    order = new_order()

    event = services.add_staff_note(order=order, text="  Customer called, paid by bank transfer.  ",
                                    actor=Actor.staff(staff))

    assert event.kind == Kind.NOTE
    assert event.actor_kind == OrderEvent.ActorKind.STAFF
    assert event.actor_user_id == staff.pk
    assert event.message == "Customer called, paid by bank transfer."
    assert events(order, Kind.NOTE) == [event]


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_a_blank_note_is_refused_and_nothing_is_recorded(staff, text):
    order = new_order()
    before = _snapshot(order)

    with pytest.raises(ValidationFailed):
        services.add_staff_note(order=order, text=text, actor=Actor.staff(staff))

    assert _snapshot(order) == before


def test_notes_are_append_only(staff):
    order = new_order()
    first = services.add_staff_note(order=order, text="first", actor=Actor.staff(staff))
    services.add_staff_note(order=order, text="second", actor=Actor.staff(staff))

    first.message = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        first.save()

    assert [e.message for e in events(order, Kind.NOTE)] == ["first", "second"]


def test_assigning_an_order_sets_the_assignee_and_writes_an_assigned_event(staff, other_staff):
    order = new_order()

    services.assign_order(order=order, assignee=other_staff, actor=Actor.staff(staff))

    assert fresh(order).assignee_id == other_staff.pk
    [event] = events(order, Kind.ASSIGNED)
    assert event.actor_user_id == staff.pk
    assert event.data["assignee_id"] == other_staff.pk
    assert event.data["previous_assignee_id"] is None
    assert other_staff.get_username() in event.message


def test_assigning_to_the_current_assignee_writes_no_second_event(staff):
    order = new_order()
    services.assign_order(order=order, assignee=staff, actor=Actor.staff(staff))

    services.assign_order(order=order, assignee=staff, actor=Actor.staff(staff))

    assert len(events(order, Kind.ASSIGNED)) == 1


def test_unassigning_records_the_previous_assignee(staff):
    order = new_order()
    services.assign_order(order=order, assignee=staff, actor=Actor.staff(staff))

    services.assign_order(order=order, assignee=None, actor=Actor.staff(staff))

    assert fresh(order).assignee_id is None
    assert events(order, Kind.ASSIGNED)[-1].data == {"assignee_id": None, "previous_assignee_id": staff.pk}


# --- a reason is required ----------------------------------------------------------------------


def _mark_paid(order, reason, actor):
    return services.request_mark_paid(order=order, provider_reference="bank-ref-1", reason=reason, actor=actor)


@pytest.mark.parametrize(
    "action",
    [
        _mark_paid,
        lambda order, reason, actor: services.staff_mark_failed(order=order, reason=reason, actor=actor),
        lambda order, reason, actor: services.staff_cancel_order(order=order, reason=reason, actor=actor),
    ],
    ids=["mark_paid", "mark_failed", "cancel"],
)
@pytest.mark.parametrize("reason", ["", "   "])
def test_a_staff_action_without_a_reason_is_refused_and_changes_nothing(staff, action, reason):
    order, _attempt = pending_order()
    before = _snapshot(order)

    with pytest.raises(ValidationFailed):
        action(order, reason, Actor.staff(staff))

    assert _snapshot(order) == before


def test_mark_paid_without_a_provider_reference_is_refused(staff):
    order, _attempt = pending_order()
    before = _snapshot(order)

    with pytest.raises(ValidationFailed):
        services.request_mark_paid(order=order, provider_reference="  ", reason="paid", actor=Actor.staff(staff))

    assert _snapshot(order) == before


# --- mark paid ---------------------------------------------------------------------------------------


def test_mark_paid_with_an_open_attempts_reference_succeeds_it_and_the_order_is_paid_then_confirmed(
    staff, django_capture_on_commit_callbacks
):
    order, attempt = pending_order()

    with django_capture_on_commit_callbacks(execute=True):
        result = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                                            reason="Bank statement shows the payment", actor=Actor.staff(staff))

    assert result.applied
    attempt = fresh(attempt)
    assert attempt.status == AttemptStatus.SUCCEEDED
    order = fresh(order)
    assert order.status == OrderStatus.CONFIRMED
    assert order.captured_amount == order.amount
    assert order.receipt_number
    assert PaymentAttempt.objects.filter(order=order).count() == 1
    moves = [(e.data["from"], e.data["to"]) for e in events(order, Kind.STATUS_CHANGED)]
    assert moves[-2:] == [(OrderStatus.PAYMENT_PENDING, OrderStatus.PAID), (OrderStatus.PAID, OrderStatus.CONFIRMED)]


def test_mark_paid_records_the_staff_member_and_the_reason_on_its_events(staff):
    order, attempt = pending_order()

    services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                               reason="Bank statement shows the payment", actor=Actor.staff(staff))

    mine = _staff_events(order, staff)
    assert {e.kind for e in mine} == {Kind.ATTEMPT_STATUS_CHANGED, Kind.STATUS_CHANGED}
    assert all(e.message == "Bank statement shows the payment" for e in mine)
    assert all(e.actor_kind == OrderEvent.ActorKind.STAFF for e in mine)
    paid = next(e for e in mine if e.kind == Kind.STATUS_CHANGED)
    assert paid.data["to"] == OrderStatus.PAID
    assert paid.data["manual"] is True
    assert paid.data["attempt_id"] == attempt.pk


def test_mark_paid_with_an_unknown_reference_records_a_manual_attempt(staff):
    order, attempt = pending_order()

    services.request_mark_paid(order=order, provider_reference="BANK-TRANSFER-77", reason="Paid by transfer",
                               actor=Actor.staff(staff))

    manual = PaymentAttempt.objects.get(order=order, provider_reference="BANK-TRANSFER-77")
    assert manual.status == AttemptStatus.SUCCEEDED
    assert manual.amount == order.amount
    assert manual.idempotency_key.startswith("manual-")
    assert fresh(order).status == OrderStatus.PAID
    created = events(order, Kind.ATTEMPT_CREATED)[-1]
    assert created.actor_user_id == staff.pk
    assert created.data["attempt_id"] == manual.pk
    assert fresh(attempt).status == AttemptStatus.PENDING  # the other attempt is left as the provider has it


def test_mark_paid_of_an_order_without_attempts_moves_it_through_payment_pending(staff):
    order = new_order()

    services.request_mark_paid(order=order, provider_reference="BANK-1", reason="Paid at the counter",
                               actor=Actor.staff(staff))

    moves = [(e.data["from"], e.data["to"]) for e in _staff_events(order, staff) if e.kind == Kind.STATUS_CHANGED]
    assert moves == [(OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING),
                     (OrderStatus.PAYMENT_PENDING, OrderStatus.PAID)]
    assert PaymentAttempt.objects.get(order=order).provider == "manual"


def test_mark_paid_refuses_the_reference_of_a_failed_attempt(staff):
    order, attempt = pending_order()
    services.transition_attempt(attempt=attempt, to=AttemptStatus.FAILED, actor=ENGINE_ACTOR, failure_code="declined")
    add_attempt(order)  # the order is still waiting for another attempt
    before = _snapshot(order)

    with pytest.raises(ValidationFailed, match="cannot be marked paid"):
        services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                   actor=Actor.staff(staff))

    assert _snapshot(order) == before


def test_mark_paid_refuses_a_reference_of_another_orders_attempt(staff):
    order, _attempt = pending_order()
    _other, others_attempt = pending_order()
    before = _snapshot(order)

    with pytest.raises(Conflict, match="another order"):
        services.request_mark_paid(order=order, provider_reference=others_attempt.provider_reference, reason="paid",
                                   actor=Actor.staff(staff))

    assert _snapshot(order) == before


@pytest.mark.parametrize("own_provider", [None, "other-psp"], ids=["no-attempt-yet", "attempt-at-another-provider"])
def test_mark_paid_refuses_another_orders_reference_whatever_attempts_this_order_has(staff, own_provider):
    order = new_order()
    if own_provider:
        add_attempt(order, provider=own_provider)
    _other, others_attempt = pending_order()
    before = _snapshot(order)

    with pytest.raises(Conflict, match="another order"):
        services.request_mark_paid(order=order, provider_reference=others_attempt.provider_reference, reason="paid",
                                   actor=Actor.staff(staff))

    assert _snapshot(order) == before


@pytest.mark.parametrize("status", [OrderStatus.PAID, OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_mark_paid_refuses_an_order_that_is_not_waiting_for_its_payment(staff, status):
    order = order_in_status(status, with_attempt=True)
    before = _snapshot(order)

    with pytest.raises(IllegalTransition):
        services.request_mark_paid(order=order, provider_reference="BANK-2", reason="paid", actor=Actor.staff(staff))

    assert _snapshot(order) == before


# --- four eyes above the merchant's limit -------------------------------------------------------------


def test_mark_paid_above_the_merchants_limit_waits_for_approval_and_leaves_the_order_unchanged(staff):
    order, attempt = _limited_order()
    before_status = fresh(order).status

    result = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                                        reason="Customer sent the receipt", actor=Actor.staff(staff))

    assert not result.applied
    approval = result.approval
    assert approval.status == PaymentApproval.Status.PENDING
    assert (approval.requested_by_id, approval.reason) == (staff.pk, "Customer sent the receipt")
    assert (approval.provider, approval.provider_reference) == ("sandbox", attempt.provider_reference)
    assert approval.amount == Decimal("500.00")
    assert fresh(order).status == before_status
    assert fresh(attempt).status == AttemptStatus.PENDING
    [event] = events(order, Kind.APPROVAL_REQUESTED)
    assert event.actor_user_id == staff.pk
    assert "Customer sent the receipt" in event.message
    assert event.data["approval_id"] == approval.pk


def test_mark_paid_at_exactly_the_limit_applies_without_approval(staff):
    order, attempt = _limited_order(limit="500.00", amount="500.00")

    result = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                        actor=Actor.staff(staff))

    assert result.applied
    assert fresh(order).status == OrderStatus.PAID
    assert not PaymentApproval.objects.filter(order=order).exists()


def test_a_second_mark_paid_request_while_one_waits_is_refused(staff, other_staff):
    order, attempt = _limited_order()
    services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="first",
                               actor=Actor.staff(staff))
    before = _snapshot(order)

    with pytest.raises(ValidationFailed, match="already waiting"):
        services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="second",
                                   actor=Actor.staff(other_staff))

    assert _snapshot(order) == before


def test_the_requester_cannot_decide_their_own_request(staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                          actor=Actor.staff(staff)).approval
    before = _snapshot(order)

    with pytest.raises(ValidationFailed, match="another staff member"):
        services.decide_mark_paid(approval=approval, approve=True, actor=Actor.staff(staff))

    assert fresh(approval).status == PaymentApproval.Status.PENDING
    assert _snapshot(order) == before


def test_the_database_refuses_a_decision_by_the_requester(staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                          actor=Actor.staff(staff)).approval

    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentApproval.objects.filter(pk=approval.pk).update(
            status=PaymentApproval.Status.APPROVED, decided_by=staff, decided_at=timezone.now()
        )

    assert fresh(approval).status == PaymentApproval.Status.PENDING


def test_approval_by_another_staff_member_marks_the_order_paid(staff, other_staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference,
                                          reason="Customer sent the receipt", actor=Actor.staff(staff)).approval

    decided = services.decide_mark_paid(approval=approval, approve=True, actor=Actor.staff(other_staff))

    assert decided.status == PaymentApproval.Status.APPROVED
    assert decided.decided_by_id == other_staff.pk
    assert decided.decided_at is not None
    assert fresh(order).status == OrderStatus.PAID
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    paid = events(order, Kind.STATUS_CHANGED)[-1]
    assert paid.data["to"] == OrderStatus.PAID
    assert paid.actor_user_id == other_staff.pk
    assert paid.message == "Customer sent the receipt"
    assert paid.data["approval_id"] == approval.pk
    [decision] = events(order, Kind.APPROVAL_DECIDED)
    assert decision.actor_user_id == other_staff.pk
    assert decision.data == {"approval_id": approval.pk, "approved": True, "requested_by": staff.pk}


def test_a_rejection_without_a_note_is_refused(staff, other_staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                          actor=Actor.staff(staff)).approval
    before = _snapshot(order)

    with pytest.raises(ValidationFailed):
        services.decide_mark_paid(approval=approval, approve=False, actor=Actor.staff(other_staff), note="  ")

    assert fresh(approval).status == PaymentApproval.Status.PENDING
    assert _snapshot(order) == before


def test_a_rejection_with_a_note_keeps_the_order_unpaid_and_records_the_note(staff, other_staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                          actor=Actor.staff(staff)).approval

    decided = services.decide_mark_paid(approval=approval, approve=False, actor=Actor.staff(other_staff),
                                        note="The receipt is for another order")

    assert decided.status == PaymentApproval.Status.REJECTED
    assert decided.decision_note == "The receipt is for another order"
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING
    assert fresh(attempt).status == AttemptStatus.PENDING
    [decision] = events(order, Kind.APPROVAL_DECIDED)
    assert decision.actor_user_id == other_staff.pk
    assert "The receipt is for another order" in decision.message


def test_a_decided_request_cannot_be_decided_again(staff, other_staff):
    order, attempt = _limited_order()
    approval = services.request_mark_paid(order=order, provider_reference=attempt.provider_reference, reason="paid",
                                          actor=Actor.staff(staff)).approval
    services.decide_mark_paid(approval=approval, approve=False, actor=Actor.staff(other_staff), note="no")

    with pytest.raises(ValidationFailed, match="already"):
        services.decide_mark_paid(approval=approval, approve=True, actor=Actor.staff(StaffUserFactory()))

    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


# --- mark failed ------------------------------------------------------------------------------------


def test_mark_failed_fails_every_open_attempt_and_the_order(staff):
    order, first = pending_order()
    second = add_attempt(order, status=AttemptStatus.UNKNOWN)

    services.staff_mark_failed(order=order, reason="Provider confirmed by phone: no payment", actor=Actor.staff(staff))

    for attempt in (first, second):
        attempt = fresh(attempt)
        assert attempt.status == AttemptStatus.FAILED
        assert attempt.failure_code == "marked_failed_by_staff"
        assert attempt.next_check_at is None
    assert fresh(order).status == OrderStatus.PAYMENT_FAILED


def test_mark_failed_records_the_staff_member_and_the_reason(staff):
    order, attempt = pending_order()

    services.staff_mark_failed(order=order, reason="Provider confirmed by phone: no payment", actor=Actor.staff(staff))

    mine = _staff_events(order, staff)
    assert [e.kind for e in mine] == [Kind.ATTEMPT_STATUS_CHANGED, Kind.STATUS_CHANGED]
    assert {e.message for e in mine} == {"Provider confirmed by phone: no payment"}
    assert mine[0].attempt_id == attempt.pk
    assert mine[1].data["to"] == OrderStatus.PAYMENT_FAILED


def test_mark_failed_is_refused_when_an_attempt_succeeded(staff):
    # A success held back from the order (for example for review) still means money moved.
    attempt = attempt_in_status(AttemptStatus.SUCCEEDED)
    order = attempt.order
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING
    before = _snapshot(order)

    with pytest.raises(ValidationFailed, match="succeeded"):
        services.staff_mark_failed(order=order, reason="no money", actor=Actor.staff(staff))

    assert _snapshot(order) == before


@pytest.mark.parametrize("status", [OrderStatus.SUBMITTED, OrderStatus.PAID, OrderStatus.PAYMENT_FAILED])
def test_mark_failed_is_refused_unless_the_order_waits_for_its_payment(staff, status):
    order = order_in_status(status)
    before = _snapshot(order)

    with pytest.raises(IllegalTransition):
        services.staff_mark_failed(order=order, reason="no money", actor=Actor.staff(staff))

    assert _snapshot(order) == before


# --- cancel -----------------------------------------------------------------------------------------


def test_cancel_cancels_the_open_attempts_and_the_order(staff):
    order, first = pending_order()
    second = add_attempt(order, status=AttemptStatus.UNKNOWN)

    services.staff_cancel_order(order=order, reason="Customer withdrew the order", actor=Actor.staff(staff))

    assert {fresh(a).status for a in (first, second)} == {AttemptStatus.CANCELLED}
    assert fresh(order).status == OrderStatus.CANCELLED
    mine = _staff_events(order, staff)
    assert [e.kind for e in mine] == [Kind.ATTEMPT_STATUS_CHANGED, Kind.ATTEMPT_STATUS_CHANGED, Kind.STATUS_CHANGED]
    assert {e.message for e in mine} == {"Customer withdrew the order"}


def test_cancel_leaves_attempts_that_already_ended_alone(staff):
    order, attempt = pending_order()
    services.transition_attempt(attempt=attempt, to=AttemptStatus.FAILED, actor=ENGINE_ACTOR, failure_code="declined")

    services.staff_cancel_order(order=order, reason="Customer gave up", actor=Actor.staff(staff))

    attempt = fresh(attempt)
    assert (attempt.status, attempt.failure_code) == (AttemptStatus.FAILED, "declined")
    assert fresh(order).status == OrderStatus.CANCELLED


def test_cancel_of_a_submitted_order_records_the_staff_member_and_reason(staff):
    order = new_order()

    services.staff_cancel_order(order=order, reason="Duplicate order", actor=Actor.staff(staff))

    [event] = _staff_events(order, staff)
    assert (event.kind, event.message, event.data["to"]) == (Kind.STATUS_CHANGED, "Duplicate order",
                                                             OrderStatus.CANCELLED)


@pytest.mark.parametrize("paid", [True, False], ids=["order-paid", "success-not-yet-applied"])
def test_cancel_is_refused_when_money_was_taken(staff, paid):
    if paid:
        order = order_in_status(OrderStatus.PAID)
    else:
        order = attempt_in_status(AttemptStatus.SUCCEEDED).order
    before = _snapshot(order)

    with pytest.raises(Conflict, match="refund"):
        services.staff_cancel_order(order=order, reason="customer asked", actor=Actor.staff(staff))

    assert _snapshot(order) == before


def test_cancel_of_an_order_that_already_ended_is_refused(staff):
    order = order_in_status(OrderStatus.EXPIRED)
    before = _snapshot(order)

    with pytest.raises(IllegalTransition):
        services.staff_cancel_order(order=order, reason="tidy up", actor=Actor.staff(staff))

    assert _snapshot(order) == before
