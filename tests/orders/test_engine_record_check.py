"""`record_check`: every provider answer, or the reason there was none, is journaled as a
`PaymentCheck` and the attempt's next check is scheduled from its re-check policy."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from orders import services
from orders.causes import Cause
from orders.models import Order, PaymentAttempt, PaymentCheck, RecheckPolicy
from orders.providers.base import ProviderError
from orders.services import record_check
from orders.states import AttemptStatus

from .engine_helpers import ENGINE_ACTOR, Kind, events, flag_order, fresh, pending_order, result_for, short_policy
from .factories import MerchantFactory

pytestmark = pytest.mark.django_db

SCHEDULED = PaymentCheck.Source.SCHEDULED

FAULTS = {
    "timeout": ProviderError("timeout", "The provider did not answer in time (ReadTimeout).", latency_ms=2001),
    "connection": ProviderError("connection", "Could not reach the provider (ConnectError).", latency_ms=4),
    "http_500": ProviderError(
        "http_error", "The provider answered with HTTP 500.", http_status=500, latency_ms=9, excerpt='{"error": "x"}'
    ),
    "malformed": ProviderError(
        "malformed", "The provider's answer is not valid JSON.", http_status=200, excerpt='{"status": '
    ),
    "not_found": ProviderError("not_found", "The provider does not know this payment.", http_status=404),
}


def attempt_in(status: str, **kwargs) -> PaymentAttempt:
    _order, attempt = pending_order(status=status, **kwargs)
    return attempt


def bounds(now, delay: int, jitter: float):
    return now + timedelta(seconds=max(1.0, delay * (1 - jitter))), now + timedelta(seconds=delay * (1 + jitter))


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_each_provider_fault_is_journaled_with_its_error_kind(fault):
    attempt = attempt_in(AttemptStatus.UNKNOWN)
    error = FAULTS[fault]

    check = record_check(attempt=attempt.pk, source=SCHEDULED, error=error)

    check = PaymentCheck.objects.get(pk=check.pk)
    assert check.attempt_id == attempt.pk
    assert check.source == SCHEDULED
    assert check.error_kind == error.kind
    assert check.error_message == error.message
    assert check.http_status == error.http_status
    assert check.latency_ms == error.latency_ms
    assert check.response_excerpt == error.excerpt
    assert check.reported_status == ""
    attempt = fresh(attempt)
    assert attempt.check_count == 1
    assert (attempt.last_error_code, attempt.last_error_message) == (error.kind, error.message)
    assert attempt.status == AttemptStatus.UNKNOWN  # a fault never changes what we know


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_each_fault_schedules_the_next_check_from_the_unknown_delays(fault):
    attempt = attempt_in(AttemptStatus.UNKNOWN)
    now = timezone.now()

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS[fault], now=now)

    # The first check done: the second delay of the built-in unknown list (60 s, 10 % jitter).
    low, high = bounds(now, 60, 0.1)
    assert low <= fresh(attempt).next_check_at <= high


@pytest.mark.parametrize(
    ("status", "delays_field"),
    [
        (AttemptStatus.UNKNOWN, "unknown_delays"),
        (AttemptStatus.INITIATED, "unknown_delays"),
        (AttemptStatus.PENDING, "pending_delays"),
    ],
)
def test_the_delay_list_follows_the_attempt_status(status, delays_field):
    policy = RecheckPolicy.objects.create(
        provider="sandbox", pending_delays=[100, 200, 300], unknown_delays=[10, 20, 30], jitter=0
    )
    attempt = attempt_in(status)
    now = timezone.now()

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)

    expected = getattr(policy, delays_field)[1]
    assert fresh(attempt).next_check_at == now + timedelta(seconds=expected)


def test_an_answer_schedules_on_the_status_the_provider_reported():
    short_policy(pending=[100, 200, 300], unknown=[10, 20, 30])
    attempt = attempt_in(AttemptStatus.UNKNOWN)
    now = timezone.now()

    record_check(attempt=attempt.pk, source=SCHEDULED, result=result_for(attempt, AttemptStatus.PENDING), now=now)

    assert fresh(attempt).next_check_at == now + timedelta(seconds=200)


def test_jitter_spreads_the_delay_within_its_fraction():
    short_policy(unknown=[1000, 1000, 1000, 1000], jitter=0.25)
    attempts = [attempt_in(AttemptStatus.UNKNOWN) for _ in range(20)]
    now = timezone.now()

    for attempt in attempts:
        record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)

    low, high = bounds(now, 1000, 0.25)
    scheduled = [fresh(a).next_check_at for a in attempts]
    assert all(low <= moment <= high for moment in scheduled)
    assert len(set(scheduled)) > 1  # spread, not bunched


def test_the_check_count_grows_with_every_check():
    attempt = attempt_in(AttemptStatus.PENDING)
    for _ in range(3):
        record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["connection"])
    assert fresh(attempt).check_count == 3
    assert PaymentCheck.objects.filter(attempt=attempt).count() == 3


# --- answers ------------------------------------------------------------------------------------


def test_an_answer_is_journaled_with_what_the_provider_reported_and_clears_the_last_error():
    attempt = attempt_in(AttemptStatus.PENDING)
    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"])
    answer = result_for(attempt, AttemptStatus.PENDING, action_required="3ds", raw={"status": "pending", "x": 1})

    check = record_check(attempt=attempt.pk, source=PaymentCheck.Source.MANUAL, result=answer)

    check = PaymentCheck.objects.get(pk=check.pk)
    assert (check.error_kind, check.reported_status, check.action_required) == ("none", "pending", "3ds")
    assert (check.reported_amount, check.reported_currency) == (attempt.amount, attempt.currency)
    assert (check.http_status, check.latency_ms) == (200, 3)
    assert '"x": 1' in check.response_excerpt
    attempt = fresh(attempt)
    assert (attempt.last_error_code, attempt.last_error_message) == ("", "")
    assert attempt.last_raw_response == {"status": "pending", "x": 1}
    assert attempt.check_count == 2


def test_recording_a_check_does_not_apply_the_result():
    attempt = attempt_in(AttemptStatus.PENDING)
    record_check(attempt=attempt.pk, source=SCHEDULED, result=result_for(attempt, AttemptStatus.SUCCEEDED))
    assert fresh(attempt).status == AttemptStatus.PENDING
    assert fresh(attempt.order).status == "payment_pending"


def test_a_check_of_a_final_attempt_is_journaled_but_never_scheduled():
    attempt = attempt_in(AttemptStatus.PENDING)
    services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=ENGINE_ACTOR)

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"])

    attempt = fresh(attempt)
    assert attempt.next_check_at is None
    assert attempt.check_count == 1


def test_record_check_takes_exactly_one_of_result_or_error():
    attempt = attempt_in(AttemptStatus.PENDING)
    with pytest.raises(ValueError):
        record_check(attempt=attempt.pk, source=SCHEDULED)
    with pytest.raises(ValueError):
        record_check(
            attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"],
            result=result_for(attempt, AttemptStatus.PENDING),
        )


def test_a_check_of_a_flagged_order_makes_the_sweep_look_again():
    order, attempt = pending_order()
    flag_order(order, Cause.RESULT_UNKNOWN)
    Order.objects.filter(pk=order.pk).update(sweep_due_at=None)
    now = timezone.now()

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)

    assert fresh(order).sweep_due_at == now


# --- exhaustion ---------------------------------------------------------------------------------


def test_an_exhausted_schedule_requests_review_once():
    short_policy(unknown=[5, 5])
    order, attempt = pending_order(status=AttemptStatus.UNKNOWN)

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"])
    assert fresh(order).needs_review is False
    assert fresh(attempt).next_check_at is not None

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"])
    assert fresh(attempt).next_check_at is None
    assert fresh(order).needs_review is True
    (review,) = events(order, Kind.REVIEW_REQUESTED)
    assert review.attempt_id == attempt.pk
    assert review.data["check_count"] == 2

    # A later manual check of the exhausted attempt asks for no second review.
    record_check(attempt=attempt.pk, source=PaymentCheck.Source.MANUAL, error=FAULTS["timeout"])
    assert len(events(order, Kind.REVIEW_REQUESTED)) == 1
    assert fresh(attempt).next_check_at is None


def test_an_exhausted_pending_schedule_also_requests_review():
    short_policy(pending=[5])
    order, attempt = pending_order(status=AttemptStatus.PENDING)

    record_check(attempt=attempt.pk, source=SCHEDULED, result=result_for(attempt, AttemptStatus.PENDING))

    assert fresh(order).needs_review is True
    assert len(events(order, Kind.REVIEW_REQUESTED)) == 1


# --- policies -----------------------------------------------------------------------------------


def test_a_merchant_policy_overrides_the_provider_default():
    merchant = MerchantFactory()
    short_policy(unknown=[10, 10, 10])
    short_policy(merchant=merchant, unknown=[500, 700, 900])
    _order, own = pending_order(status=AttemptStatus.UNKNOWN, merchant=merchant)
    _order, other = pending_order(status=AttemptStatus.UNKNOWN)
    now = timezone.now()

    record_check(attempt=own.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)
    record_check(attempt=other.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)

    assert fresh(own).next_check_at == now + timedelta(seconds=700)
    assert fresh(other).next_check_at == now + timedelta(seconds=10)


def test_a_merchant_policy_of_another_provider_does_not_apply():
    merchant = MerchantFactory()
    short_policy(provider="elsewhere", merchant=merchant, unknown=[500, 700, 900])
    _order, attempt = pending_order(status=AttemptStatus.UNKNOWN, merchant=merchant)
    now = timezone.now()

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"], now=now)

    low, high = bounds(now, 60, 0.1)  # the built-in list
    assert low <= fresh(attempt).next_check_at <= high


def test_a_merchant_policy_can_exhaust_sooner_than_the_default():
    merchant = MerchantFactory()
    short_policy(unknown=[10, 10, 10, 10])
    short_policy(merchant=merchant, unknown=[10])
    order, attempt = pending_order(status=AttemptStatus.UNKNOWN, merchant=merchant)

    record_check(attempt=attempt.pk, source=SCHEDULED, error=FAULTS["timeout"])

    assert fresh(order).needs_review is True


def test_the_policy_book_is_read_once_per_batch(django_assert_num_queries):
    short_policy(unknown=[10, 10])
    merchant_ids = [attempt_in(AttemptStatus.UNKNOWN, amount=Decimal("10.00")).order.merchant_id for _ in range(3)]
    book = services.PolicyBook()

    with django_assert_num_queries(0):
        for merchant_id in merchant_ids:
            assert book.for_attempt("sandbox", merchant_id).unknown_delays == [10, 10]
    # Loaded at construction: one query whatever the number of attempts.
    with django_assert_num_queries(1):
        services.PolicyBook()
