"""`apply_provider_result`: the one path every provider answer takes (callback, scheduled
check, "check now"). It must be idempotent and must never apply money that does not match."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders import services
from orders.causes import Cause
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck
from orders.services import apply_provider_result
from orders.states import AttemptStatus, OrderStatus
from orders.sweep import sweep_unreturned

from .engine_helpers import (
    ENGINE_ACTOR,
    PROVIDER_ACTOR,
    Kind,
    add_attempt,
    events,
    flag_order,
    fresh,
    new_order,
    pending_order,
    result_for,
)

pytestmark = pytest.mark.django_db

SCHEDULED = PaymentCheck.Source.SCHEDULED
CALLBACK = PaymentCheck.Source.CALLBACK


def apply(attempt: PaymentAttempt, status: str, *, source: str = CALLBACK, **overrides):
    return apply_provider_result(
        attempt=attempt.pk, result=result_for(attempt, status, **overrides), source=source, actor=PROVIDER_ACTOR
    )


# --- success ------------------------------------------------------------------------------------


def test_a_success_moves_a_pending_order_to_paid_with_the_captured_amount():
    order, attempt = pending_order(amount=Decimal("88.50"))

    outcome = apply(attempt, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert (order.status, order.captured_amount) == (OrderStatus.PAID, Decimal("88.50"))
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    assert fresh(attempt).next_check_at is None
    assert (outcome.changed, outcome.attempt_status, outcome.order_status) == (True, "succeeded", "paid")
    paid = events(order, Kind.STATUS_CHANGED)[-1]
    assert (paid.data["from"], paid.data["to"], paid.data["attempt_id"]) == ("payment_pending", "paid", attempt.pk)
    assert paid.actor_kind == "provider"


def test_a_success_enqueues_the_confirmation_after_commit(django_capture_on_commit_callbacks):
    order, attempt = pending_order()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        apply(attempt, AttemptStatus.SUCCEEDED)

    # Nothing is confirmed inside the transaction that applied the payment.
    assert fresh(order).status == OrderStatus.PAID
    assert len(callbacks) >= 1


def test_the_enqueued_confirmation_confirms_the_order_with_receipt_and_dispatch_numbers(
    django_capture_on_commit_callbacks,
):
    order, attempt = pending_order()

    with django_capture_on_commit_callbacks(execute=True):
        apply(attempt, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    code = order.merchant.code.upper()[:12]
    assert order.status == OrderStatus.CONFIRMED
    assert order.receipt_number == f"RC-{code}-{order.pk:08d}"
    assert order.dispatch_number == f"DN-{code}-{order.pk:08d}"
    assert [e.data["to"] for e in events(order, Kind.STATUS_CHANGED)] == ["payment_pending", "paid", "confirmed"]


def test_a_confirmed_success_resolves_the_unreturned_flag(django_capture_on_commit_callbacks):
    order, attempt = pending_order()
    flag_order(order, Cause.RESULT_UNKNOWN)

    with django_capture_on_commit_callbacks(execute=True):
        apply(attempt, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert order.status == OrderStatus.CONFIRMED
    assert (order.stuck_since, order.stuck_cause, order.needs_review) == (None, "", False)
    assert order.resolved_at is not None


# --- idempotency --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "overrides"),
    [
        (AttemptStatus.SUCCEEDED, {}),
        (AttemptStatus.FAILED, {}),
        (AttemptStatus.EXPIRED, {}),
        (AttemptStatus.PENDING, {"action_required": "3ds"}),
        (AttemptStatus.SUCCEEDED, {"amount": Decimal("1.00")}),  # held for review
    ],
)
def test_applying_the_same_result_twice_changes_nothing_the_second_time(status, overrides):
    order, attempt = pending_order(status=AttemptStatus.UNKNOWN)
    apply(attempt, status, **overrides)
    before_order, before_attempt = fresh(order), fresh(attempt)
    event_count = OrderEvent.objects.count()

    outcome = apply(attempt, status, **overrides)

    assert outcome.changed is False
    assert OrderEvent.objects.count() == event_count
    after_order, after_attempt = fresh(order), fresh(attempt)
    for field in ("status", "captured_amount", "stuck_cause", "needs_review", "stuck_since"):
        assert getattr(after_order, field) == getattr(before_order, field), field
    for field in ("status", "failure_code", "action_required", "status_changed_at", "provider_reference"):
        assert getattr(after_attempt, field) == getattr(before_attempt, field), field


def test_a_duplicate_success_applied_again_reports_no_change():
    order, first = pending_order()
    apply(first, AttemptStatus.SUCCEEDED)
    second = PaymentAttempt.objects.create(
        order=order, provider="sandbox", provider_reference="sbx_twin", idempotency_key="twin",
        amount=order.amount, currency=order.currency, status=AttemptStatus.PENDING,
    )
    apply(second, AttemptStatus.SUCCEEDED)
    event_count = OrderEvent.objects.count()

    outcome = apply(second, AttemptStatus.SUCCEEDED)

    assert OrderEvent.objects.count() == event_count
    assert outcome.changed is False


# --- money that does not match ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{"amount": Decimal("129.00")}, {"amount": Decimal("127.99")}, {"currency": "USD"}],
    ids=["more", "less", "currency"],
)
def test_a_success_whose_money_differs_is_never_applied(overrides):
    order, attempt = pending_order(amount=Decimal("128.00"), currency="CNY")

    outcome = apply(attempt, AttemptStatus.SUCCEEDED, **overrides)

    order = fresh(order)
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert order.captured_amount == Decimal("0")
    assert order.needs_review is True
    assert order.stuck_cause == Cause.AMOUNT_MISMATCH
    assert order.stuck_category == "provider"
    assert outcome.review_cause == Cause.AMOUNT_MISMATCH
    assert not [e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "paid"]
    (review,) = events(order, Kind.REVIEW_REQUESTED)
    assert review.data["cause"] == Cause.AMOUNT_MISMATCH


def test_a_mismatched_success_does_not_enqueue_a_confirmation(django_capture_on_commit_callbacks):
    order, attempt = pending_order()

    with django_capture_on_commit_callbacks(execute=True):
        apply(attempt, AttemptStatus.SUCCEEDED, amount=Decimal("1.00"))

    assert fresh(order).status == OrderStatus.PAYMENT_PENDING
    assert fresh(order).receipt_number == ""


def test_a_mismatched_success_stays_in_review_after_the_sweep():
    order, attempt = pending_order()
    record = result_for(attempt, AttemptStatus.SUCCEEDED, amount=Decimal("999.00"))
    services.record_check(attempt=attempt.pk, source=CALLBACK, result=record)
    apply_provider_result(attempt=attempt.pk, result=record, source=CALLBACK, actor=PROVIDER_ACTOR)

    sweep_unreturned()

    order = fresh(order)
    assert (order.stuck_cause, order.needs_review) == (Cause.AMOUNT_MISMATCH, True)


# --- duplicates ---------------------------------------------------------------------------------


def test_a_second_succeeded_attempt_flags_duplicate_payment_for_review():
    order, first = pending_order()
    apply(first, AttemptStatus.SUCCEEDED)
    second = PaymentAttempt.objects.create(
        order=order, provider="sandbox", provider_reference="sbx_twin", idempotency_key="twin",
        amount=order.amount, currency=order.currency, status=AttemptStatus.PENDING,
    )

    outcome = apply(second, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert fresh(second).status == AttemptStatus.SUCCEEDED
    assert order.status == OrderStatus.PAID  # paid once, by the first attempt
    assert order.captured_amount == order.amount
    assert (order.stuck_cause, order.needs_review) == (Cause.DUPLICATE_PAYMENT, True)
    assert outcome.review_cause == Cause.DUPLICATE_PAYMENT
    assert len([e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "paid"]) == 1
    (review,) = events(order, Kind.REVIEW_REQUESTED)
    assert review.data["cause"] == Cause.DUPLICATE_PAYMENT


def test_a_duplicate_on_a_confirmed_order_is_flagged_too(django_capture_on_commit_callbacks):
    order, first = pending_order()
    with django_capture_on_commit_callbacks(execute=True):
        apply(first, AttemptStatus.SUCCEEDED)
    assert fresh(order).status == OrderStatus.CONFIRMED
    second = PaymentAttempt.objects.create(
        order=order, provider="sandbox", provider_reference="sbx_twin2", idempotency_key="twin2",
        amount=order.amount, currency=order.currency, status=AttemptStatus.PENDING,
    )

    apply(second, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert order.status == OrderStatus.CONFIRMED
    assert (order.stuck_cause, order.needs_review) == (Cause.DUPLICATE_PAYMENT, True)


# --- failure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CANCELLED])
def test_a_final_failure_moves_the_order_to_payment_failed_when_no_other_attempt_is_open(status):
    order, attempt = pending_order()

    apply(attempt, status)

    assert fresh(order).status == OrderStatus.PAYMENT_FAILED
    assert fresh(attempt).status == status
    last = events(order, Kind.STATUS_CHANGED)[-1]
    assert (last.data["from"], last.data["to"]) == ("payment_pending", "payment_failed")


def test_a_failure_records_the_decline_code_on_the_attempt():
    order, attempt = pending_order()
    apply(attempt, AttemptStatus.FAILED, failure_code="insufficient_funds")
    assert fresh(attempt).failure_code == "insufficient_funds"


def test_a_failure_keeps_the_order_pending_while_another_attempt_is_open():
    order, first = pending_order()
    add_attempt(order, status=AttemptStatus.UNKNOWN)

    apply(first, AttemptStatus.FAILED)

    assert fresh(first).status == AttemptStatus.FAILED
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


def test_the_last_open_attempt_failing_fails_the_order():
    order, first = pending_order()
    second = add_attempt(order)
    apply(first, AttemptStatus.FAILED)

    apply(second, AttemptStatus.FAILED)

    assert fresh(order).status == OrderStatus.PAYMENT_FAILED
    assert len([e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "payment_failed"]) == 1


# --- stale and contradicting reports ------------------------------------------------------------


@pytest.mark.parametrize("final", [AttemptStatus.SUCCEEDED, AttemptStatus.FAILED])
def test_a_stale_pending_report_after_a_final_status_changes_nothing(final):
    order, attempt = pending_order()
    apply(attempt, final)
    before_order, before_attempt = fresh(order), fresh(attempt)
    event_count = OrderEvent.objects.count()

    outcome = apply(attempt, AttemptStatus.PENDING)

    assert outcome.changed is False
    assert OrderEvent.objects.count() == event_count
    assert fresh(attempt).status == before_attempt.status == final
    assert fresh(order).status == before_order.status
    assert fresh(order).needs_review is False


@pytest.mark.parametrize(
    ("held", "reported"),
    [(AttemptStatus.SUCCEEDED, AttemptStatus.FAILED), (AttemptStatus.FAILED, AttemptStatus.SUCCEEDED)],
)
def test_a_contradicting_final_status_goes_to_review_without_changing_the_attempt(held, reported):
    order, attempt = pending_order()
    apply(attempt, held)
    status_before = fresh(order).status

    outcome = apply(attempt, reported)

    assert fresh(attempt).status == held
    order = fresh(order)
    assert order.status == status_before
    assert order.needs_review is True
    assert outcome.attempt_status == held
    (review,) = events(order, Kind.REVIEW_REQUESTED)
    assert reported in review.message


@pytest.mark.parametrize(
    ("held", "reported"),
    [(AttemptStatus.SUCCEEDED, AttemptStatus.FAILED), (AttemptStatus.FAILED, AttemptStatus.SUCCEEDED)],
)
def test_a_contradiction_is_not_labelled_an_amount_mismatch(held, reported):
    order, attempt = pending_order()
    apply(attempt, held)

    apply(attempt, reported)

    assert fresh(order).stuck_cause != Cause.AMOUNT_MISMATCH


def test_a_contradiction_on_a_confirmed_order_stays_in_review_after_the_sweep(django_capture_on_commit_callbacks):
    order, attempt = pending_order()
    with django_capture_on_commit_callbacks(execute=True):
        apply(attempt, AttemptStatus.SUCCEEDED)
    apply(attempt, AttemptStatus.FAILED)
    assert fresh(order).needs_review is True

    sweep_unreturned()

    assert fresh(order).needs_review is True


# --- revival, late payments ---------------------------------------------------------------------


def test_a_success_on_a_payment_failed_order_revives_it_to_paid():
    order, attempt = pending_order()
    # Staff marked the order failed while the provider had not answered yet.
    services.transition_order(order=order, to=OrderStatus.PAYMENT_FAILED, actor=ENGINE_ACTOR, reason="gave up")

    apply(attempt, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert (order.status, order.captured_amount) == (OrderStatus.PAID, order.amount)
    moves = [(e.data["from"], e.data["to"]) for e in events(order, Kind.STATUS_CHANGED)]
    assert moves[-2:] == [("payment_failed", "payment_pending"), ("payment_pending", "paid")]


@pytest.mark.parametrize("terminal", [OrderStatus.CANCELLED, OrderStatus.EXPIRED])
def test_a_success_on_a_cancelled_or_expired_order_requests_review_and_keeps_the_status(terminal):
    order, attempt = pending_order()
    services.transition_order(order=order, to=terminal, actor=ENGINE_ACTOR)

    outcome = apply(attempt, AttemptStatus.SUCCEEDED)

    order = fresh(order)
    assert order.status == terminal
    assert order.needs_review is True
    assert outcome.review_cause
    assert len(events(order, Kind.REVIEW_REQUESTED)) == 1


# --- reconciliation (callback lost) -------------------------------------------------------------


@pytest.mark.parametrize("status", [AttemptStatus.SUCCEEDED, AttemptStatus.FAILED])
def test_a_final_result_found_by_a_scheduled_check_without_callback_is_recorded_as_reconciled(status):
    order, attempt = pending_order()

    outcome = apply(attempt, status, source=SCHEDULED)

    assert outcome.reconciled is True
    (applied,) = events(order, Kind.RESULT_APPLIED)
    assert applied.data["reconciled"] is True
    assert applied.data["cause"] == Cause.CALLBACK_LOST
    assert applied.data["source"] == SCHEDULED
    assert applied.attempt_id == attempt.pk


def test_a_final_result_from_a_callback_is_not_a_reconciliation():
    order, attempt = pending_order()
    outcome = apply(attempt, AttemptStatus.SUCCEEDED, source=CALLBACK)
    assert outcome.reconciled is False
    assert events(order, Kind.RESULT_APPLIED) == []


def test_a_check_after_a_signed_callback_is_not_a_reconciliation():
    order, attempt = pending_order()
    attempt.callbacks.create(provider="sandbox", event_id="evt_seen", signature_valid=True)

    outcome = apply(attempt, AttemptStatus.SUCCEEDED, source=SCHEDULED)

    assert outcome.reconciled is False
    assert events(order, Kind.RESULT_APPLIED) == []


def test_a_pending_result_from_a_check_is_not_a_reconciliation():
    order, attempt = pending_order(status=AttemptStatus.UNKNOWN)
    outcome = apply(attempt, AttemptStatus.PENDING, source=SCHEDULED)
    assert outcome.changed is True
    assert outcome.reconciled is False
    assert events(order, Kind.RESULT_APPLIED) == []


def test_a_reconciled_result_is_recorded_once():
    order, attempt = pending_order()
    apply(attempt, AttemptStatus.SUCCEEDED, source=SCHEDULED)
    outcome = apply(attempt, AttemptStatus.SUCCEEDED, source=SCHEDULED)
    assert outcome.reconciled is False
    assert len(events(order, Kind.RESULT_APPLIED)) == 1


# --- open statuses ------------------------------------------------------------------------------


def test_a_pending_report_with_a_customer_action_is_kept_on_the_attempt():
    order, attempt = pending_order()

    outcome = apply(attempt, AttemptStatus.PENDING, action_required="3ds")

    assert outcome.changed is True
    assert fresh(attempt).action_required == "3ds"
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


def test_a_result_teaches_an_unknown_attempt_its_provider_reference():
    order = new_order()
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", status=AttemptStatus.UNKNOWN, actor=ENGINE_ACTOR
    )
    assert attempt.provider_reference == ""

    apply(attempt, AttemptStatus.PENDING, provider_reference="sbx_learned")

    assert fresh(attempt).provider_reference == "sbx_learned"
    assert fresh(attempt).status == AttemptStatus.PENDING


def test_applying_a_result_to_a_flagged_order_makes_the_sweep_look_again_now():
    order, attempt = pending_order()
    flag_order(order, Cause.RESULT_UNKNOWN)
    Order.objects.filter(pk=order.pk).update(sweep_due_at=None)

    apply(attempt, AttemptStatus.PENDING, action_required="3ds")

    assert fresh(order).sweep_due_at is not None
