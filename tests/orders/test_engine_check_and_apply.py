"""`check_and_apply`: the re-check's hot path journals an answer and applies it in one
transaction, and still never loses the check when applying fails."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders.models import PaymentAttempt, PaymentCheck
from orders.providers.base import ProviderError
from orders.services import check_and_apply
from orders.states import AttemptStatus, OrderStatus

from .engine_helpers import ENGINE_ACTOR, Kind, events, fresh, pending_order, result_for

pytestmark = pytest.mark.django_db

SCHEDULED = PaymentCheck.Source.SCHEDULED


def loaded(attempt: PaymentAttempt) -> PaymentAttempt:
    """The attempt as the re-check batch loads it: with its order and merchant."""
    return PaymentAttempt.objects.select_related("order__merchant").get(pk=attempt.pk)


def test_a_success_is_journaled_and_pays_the_order():
    order, attempt = pending_order(amount=Decimal("42.00"))

    done = check_and_apply(attempt=loaded(attempt), source=SCHEDULED, actor=ENGINE_ACTOR,
                           result=result_for(attempt, AttemptStatus.SUCCEEDED), has_callback=False)

    assert done.error is None and done.outcome.changed
    assert (done.check.source, done.check.reported_status) == (SCHEDULED, "succeeded")
    attempt = fresh(attempt)
    assert (attempt.status, attempt.check_count, attempt.next_check_at) == (AttemptStatus.SUCCEEDED, 1, None)
    assert fresh(order).status == OrderStatus.PAID
    assert len(events(order, Kind.RESULT_APPLIED)) == 1  # no callback brought it: reconciled


def test_a_success_takes_a_constant_number_of_statements(django_assert_num_queries):
    _order, attempt = pending_order()
    attempt = loaded(attempt)
    result = result_for(attempt, AttemptStatus.SUCCEEDED)

    # Lock order, lock attempt, insert the check, update the attempt, the duplicate-payment
    # lookup, update the order, the three events in one insert, and the savepoint pair of the
    # test's own transaction.
    with django_assert_num_queries(9):
        check_and_apply(attempt=attempt, source=SCHEDULED, actor=ENGINE_ACTOR, result=result, has_callback=False)


def test_a_provider_fault_is_journaled_and_the_attempt_rescheduled():
    _order, attempt = pending_order()
    fault = ProviderError("timeout", "The provider did not answer in time.", latency_ms=2001)

    done = check_and_apply(attempt=loaded(attempt), source=SCHEDULED, actor=ENGINE_ACTOR, error=fault)

    assert done.outcome is None and done.error is None
    assert done.check.error_kind == "timeout"
    attempt = fresh(attempt)
    assert (attempt.status, attempt.check_count, attempt.last_error_code) == (AttemptStatus.PENDING, 1, "timeout")
    assert attempt.next_check_at is not None


def test_an_answer_that_cannot_be_applied_is_still_journaled():
    _order, attempt = pending_order()
    _other_order, other = pending_order()
    # The provider names a reference another attempt already holds: applying it must fail.
    result = result_for(attempt, AttemptStatus.SUCCEEDED, provider_reference=other.provider_reference)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(provider_reference="")

    done = check_and_apply(attempt=loaded(attempt), source=SCHEDULED, actor=ENGINE_ACTOR, result=result)

    assert done.outcome is None
    assert "already used" in done.error.message
    assert PaymentCheck.objects.filter(attempt=attempt, reported_status="succeeded").count() == 1
    attempt = fresh(attempt)
    assert (attempt.status, attempt.check_count) == (AttemptStatus.PENDING, 1)
    assert fresh(attempt.order).status == OrderStatus.PAYMENT_PENDING


def test_it_takes_exactly_one_of_result_or_error():
    _order, attempt = pending_order()

    with pytest.raises(ValueError):
        check_and_apply(attempt=attempt, source=SCHEDULED, actor=ENGINE_ACTOR)
