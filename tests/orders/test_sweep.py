"""The unreturned sweep: flags orders past their merchant's threshold with a cause, writes an
event only when the verdict changes, unflags what resolved, and costs almost nothing when
nothing is due."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orders import services
from orders.causes import Cause
from orders.diagnosis import diagnose
from orders.evidence import detect_outage_providers, gather_evidence
from orders.models import Order, OrderEvent, PaymentCheck
from orders.providers.base import ProviderError
from orders.services import FLAGGED_REVISIT, _jsonable
from orders.states import AttemptStatus, OrderStatus
from orders.sweep import sweep_unreturned

from .engine_helpers import (
    ENGINE_ACTOR,
    PROVIDER_ACTOR,
    Kind,
    add_attempt,
    events,
    fresh,
    new_order,
    pending_order,
    result_for,
    short_policy,
)
from .factories import MerchantFactory

pytestmark = pytest.mark.django_db

SCHEDULED = PaymentCheck.Source.SCHEDULED
TIMEOUT = ProviderError("timeout", "The provider did not answer in time (ReadTimeout).")


def later(minutes: float) -> timezone.datetime:
    return timezone.now() + timedelta(minutes=minutes)


def quick_merchant(minutes: int = 1):
    return MerchantFactory(stuck_after=timedelta(minutes=minutes), escalate_after=timedelta(minutes=minutes + 1))


def flag_kinds() -> set[str]:
    return {Kind.FLAGGED, Kind.DIAGNOSIS_CHANGED, Kind.UNFLAGGED, Kind.REVIEW_REQUESTED}


def sweep_events(order: Order) -> list[OrderEvent]:
    return [e for e in events(order) if e.kind in flag_kinds()]


# --- flagging -----------------------------------------------------------------------------------


def test_an_order_past_its_merchants_threshold_is_flagged_with_its_cause_and_one_event():
    merchant = MerchantFactory(stuck_after=timedelta(minutes=15), escalate_after=timedelta(hours=1))
    order = new_order(merchant=merchant)
    now = later(16)

    report = sweep_unreturned(now=now)

    order = fresh(order)
    assert (order.stuck_cause, order.stuck_category) == (Cause.NO_PAYMENT_STARTED, "customer")
    assert order.stuck_since == now
    assert order.needs_review is False
    assert report.counts.flagged == 1
    (flagged,) = sweep_events(order)
    assert flagged.kind == Kind.FLAGGED
    assert flagged.data["cause"] == Cause.NO_PAYMENT_STARTED
    assert flagged.actor_kind == "system"


def test_an_order_younger_than_the_threshold_is_not_flagged():
    merchant = MerchantFactory(stuck_after=timedelta(minutes=15), escalate_after=timedelta(hours=1))
    order = new_order(merchant=merchant)

    report = sweep_unreturned(now=later(14))

    assert report.orders == 0  # not even read: it is not due yet
    assert fresh(order).stuck_since is None


def test_each_merchant_has_its_own_threshold():
    quick = new_order(merchant=quick_merchant(5))
    slow = new_order(merchant=MerchantFactory(stuck_after=timedelta(hours=1), escalate_after=timedelta(hours=2)))

    sweep_unreturned(now=later(10))

    assert fresh(quick).stuck_cause == Cause.NO_PAYMENT_STARTED
    assert fresh(slow).stuck_since is None


@pytest.mark.parametrize(
    ("attempt_status", "cause"),
    [
        (AttemptStatus.PENDING, Cause.AWAITING_CUSTOMER_ACTION),
        (AttemptStatus.UNKNOWN, Cause.RESULT_UNKNOWN),
        (AttemptStatus.INITIATED, Cause.RESULT_UNKNOWN),
    ],
)
def test_a_waiting_payment_is_flagged_with_the_matching_cause(attempt_status, cause):
    order, _attempt = pending_order(status=attempt_status, merchant=quick_merchant())

    sweep_unreturned(now=later(2))

    assert fresh(order).stuck_cause == cause


def test_a_flagged_order_is_looked_at_again_after_the_revisit_interval():
    order = new_order(merchant=quick_merchant())
    now = later(2)

    sweep_unreturned(now=now)

    assert fresh(order).sweep_due_at == now + FLAGGED_REVISIT


# --- re-sweeping --------------------------------------------------------------------------------


def test_resweeping_without_change_writes_no_event():
    order = new_order(merchant=quick_merchant())
    sweep_unreturned(now=later(2))
    event_count = OrderEvent.objects.count()

    report = sweep_unreturned(now=later(2) + FLAGGED_REVISIT + timedelta(seconds=1))

    assert report.orders == 1  # it was looked at...
    assert report.counts.unchanged == 1
    assert OrderEvent.objects.count() == event_count  # ...and nothing was written about it
    assert fresh(order).stuck_cause == Cause.NO_PAYMENT_STARTED


def test_a_change_of_cause_writes_one_diagnosis_changed_event():
    order, attempt = pending_order(merchant=quick_merchant())
    sweep_unreturned(now=later(2))
    assert fresh(order).stuck_cause == Cause.AWAITING_CUSTOMER_ACTION
    now = later(3)
    # Two checks in a row cannot reach the provider.
    services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT, now=now)
    services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT, now=now)

    report = sweep_unreturned(now=now)
    sweep_unreturned(now=now + FLAGGED_REVISIT + timedelta(seconds=1))

    order = fresh(order)
    assert order.stuck_cause == Cause.PROVIDER_UNREACHABLE
    assert order.stuck_category == "network"
    assert report.counts.changed == 1
    changed = [e for e in sweep_events(order) if e.kind == Kind.DIAGNOSIS_CHANGED]
    assert len(changed) == 1
    assert (changed[0].data["previous_cause"], changed[0].data["cause"]) == (
        Cause.AWAITING_CUSTOMER_ACTION, Cause.PROVIDER_UNREACHABLE,
    )


def test_the_first_flag_time_is_kept_when_the_cause_changes():
    order, attempt = pending_order(merchant=quick_merchant())
    first = later(2)
    sweep_unreturned(now=first)
    now = later(3)
    services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT, now=now)
    services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT, now=now)

    sweep_unreturned(now=now)

    assert fresh(order).stuck_since == first


def test_a_resolved_order_is_unflagged_with_resolved_at():
    order, attempt = pending_order(merchant=quick_merchant())
    sweep_unreturned(now=later(2))
    assert fresh(order).stuck_since is not None
    # The payment goes through; the order is paid (not yet confirmed) and young again.
    services.apply_provider_result(
        attempt=attempt.pk, result=result_for(attempt, AttemptStatus.SUCCEEDED), source="callback",
        actor=PROVIDER_ACTOR,
    )
    assert fresh(order).stuck_since is not None  # paid is not terminal: the sweep decides
    now = timezone.now() + timedelta(seconds=5)

    report = sweep_unreturned(now=now)

    order = fresh(order)
    assert (order.stuck_since, order.stuck_cause, order.stuck_category) == (None, "", "")
    assert order.resolved_at == now
    assert report.counts.unflagged == 1
    (unflagged,) = [e for e in sweep_events(order) if e.kind == Kind.UNFLAGGED]
    assert unflagged.data["cause"] == Cause.AWAITING_CUSTOMER_ACTION


def test_a_terminal_order_is_never_due_again():
    order = new_order(merchant=quick_merchant())
    sweep_unreturned(now=later(2))
    services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=ENGINE_ACTOR)

    assert fresh(order).sweep_due_at is None
    assert fresh(order).resolved_at is not None
    assert sweep_unreturned(now=later(60)).orders == 0


def test_the_sweep_keeps_a_review_requested_by_the_recheck_engine():
    short_policy(unknown=[5])
    order, attempt = pending_order(status=AttemptStatus.UNKNOWN, merchant=quick_merchant())
    services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT)
    assert fresh(order).needs_review is True

    sweep_unreturned(now=later(2))

    order = fresh(order)
    assert order.stuck_cause == Cause.RESULT_UNKNOWN
    assert order.needs_review is True
    (flagged,) = [e for e in sweep_events(order) if e.kind == Kind.FLAGGED]
    assert flagged.data["evidence"]["schedule_exhausted"] is True


# --- cost ---------------------------------------------------------------------------------------


TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT", "ROLLBACK")


def test_a_sweep_with_nothing_due_does_a_constant_small_number_of_queries(django_assert_max_num_queries):
    for _ in range(20):
        new_order(merchant=quick_merchant(30))
        pending_order(merchant=quick_merchant(30))

    with django_assert_max_num_queries(4) as captured:
        report = sweep_unreturned(now=later(1))

    assert report.orders == 0
    # Outage detection and the due query; the rest is the batch transaction's savepoint pair.
    statements = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
    assert len(statements) <= 2


def test_the_query_count_of_a_sweep_does_not_grow_with_the_batch():
    merchant = quick_merchant()
    for _ in range(3):
        pending_order(merchant=merchant)
    first = later(2)
    with CaptureQueriesContext(connection) as small:
        sweep_unreturned(now=first)
    for _ in range(30):
        order, attempt = pending_order(merchant=merchant)
        services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT)

    with CaptureQueriesContext(connection) as large:
        report = sweep_unreturned(now=first + FLAGGED_REVISIT + timedelta(seconds=1))

    assert report.orders == 33
    assert len(large.captured_queries) <= len(small.captured_queries) + 1


def test_orders_are_swept_in_batches_each_once():
    merchant = quick_merchant()
    orders = [new_order(merchant=merchant) for _ in range(5)]

    report = sweep_unreturned(now=later(2), batch_size=2)

    assert (report.orders, report.batches) == (5, 3)
    assert report.counts.flagged == 5
    for order in orders:
        assert len(sweep_events(order)) == 1


# --- outage -------------------------------------------------------------------------------------


def _failing_attempts(count: int, provider: str = "sandbox"):
    merchant = quick_merchant()
    made = []
    for _ in range(count):
        order, attempt = pending_order(provider=provider, merchant=merchant)
        services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT)
        services.record_check(attempt=attempt.pk, source=SCHEDULED, error=TIMEOUT)
        made.append((order, attempt))
    return made


def test_many_recent_attempts_of_one_provider_failing_checks_is_diagnosed_as_an_outage():
    made = _failing_attempts(25)
    now = later(2)

    report = sweep_unreturned(now=now)

    assert report.outage_providers == frozenset({"sandbox"})
    for order, _attempt in made:
        order = fresh(order)
        assert (order.stuck_cause, order.stuck_category) == (Cause.PROVIDER_OUTAGE, "provider")


def test_a_few_failing_attempts_are_not_an_outage():
    made = _failing_attempts(5)

    report = sweep_unreturned(now=later(2))

    assert report.outage_providers == frozenset()
    assert {fresh(order).stuck_cause for order, _attempt in made} == {Cause.PROVIDER_UNREACHABLE}


def test_an_outage_of_one_provider_does_not_touch_orders_of_another():
    _failing_attempts(25, provider="sandbox")
    order, _attempt = pending_order(provider="otherpay", merchant=quick_merchant())

    sweep_unreturned(now=later(2))

    assert fresh(order).stuck_cause == Cause.AWAITING_CUSTOMER_ACTION


def test_old_failing_attempts_are_outside_the_outage_window():
    _failing_attempts(25)

    assert detect_outage_providers(now=later(11)) == frozenset()
    assert detect_outage_providers(now=later(2)) == frozenset({"sandbox"})


# --- evidence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["no_payment", "pending", "unreachable", "outage"])
def test_the_evidence_stored_with_the_flag_matches_the_diagnosis(scenario):
    if scenario == "outage":
        order, _attempt = _failing_attempts(25)[0]
    elif scenario == "unreachable":
        order, _attempt = _failing_attempts(1)[0]
    elif scenario == "pending":
        order, _attempt = pending_order(merchant=quick_merchant())
    else:
        order = new_order(merchant=quick_merchant())
    now = later(2)

    report = sweep_unreturned(now=now)

    outage = report.outage_providers
    expected = diagnose(gather_evidence([order.pk])[order.pk], now=now, outage_providers=outage)
    order = fresh(order)
    assert (order.stuck_cause, order.stuck_category, order.needs_review) == (
        expected.cause, expected.category, expected.needs_review,
    )
    (flagged,) = [e for e in sweep_events(order) if e.kind == Kind.FLAGGED]
    assert flagged.message == expected.summary
    assert flagged.data["cause"] == expected.cause
    assert flagged.data["category"] == expected.category
    assert flagged.data["recommended_action"] == expected.recommended_action
    assert flagged.data["evidence"] == _jsonable(expected.evidence)
    assert flagged.data["evidence"]["order_id"] == order.pk


def test_a_money_problem_is_flagged_even_on_a_young_order():
    order, first = pending_order()  # default merchant: 15 minutes, far from due
    second = add_attempt(order)
    for attempt in (first, second):
        result = result_for(attempt, AttemptStatus.SUCCEEDED)
        services.record_check(attempt=attempt.pk, source="callback", result=result)
        services.apply_provider_result(attempt=attempt.pk, result=result, source="callback", actor=PROVIDER_ACTOR)

    sweep_unreturned(now=timezone.now() + timedelta(seconds=1))

    order = fresh(order)
    assert (order.stuck_cause, order.needs_review) == (Cause.DUPLICATE_PAYMENT, True)


# --- the scheduled task: other workers sweep alongside on a backlog ------------------------------


def due_orders(count: int) -> None:
    merchant = quick_merchant()
    for _ in range(count):
        order = new_order(merchant=merchant)
        Order.objects.filter(pk=order.pk).update(sweep_due_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    import orders.tasks

    names: list[str] = []
    monkeypatch.setattr(orders.tasks, "async_task", lambda func, **kwargs: names.append(func))
    monkeypatch.setattr(orders.tasks, "SWEEP_BATCH", 2)
    return names


def test_the_sweep_task_asks_the_other_workers_to_help_with_a_backlog(on_postgres, enqueued, settings):
    from orders.tasks import sweep_unreturned_orders

    settings.SWEEP_WORKERS = 3
    due_orders(3)

    result = sweep_unreturned_orders()

    assert enqueued == ["orders.tasks.sweep_unreturned_part"] * 2
    assert "orders=3" in result and "helpers=2" in result


def test_the_sweep_task_sweeps_alone_when_one_batch_is_due(enqueued, settings):
    from orders.tasks import sweep_unreturned_orders

    settings.SWEEP_WORKERS = 3
    due_orders(2)

    assert "helpers=0" in sweep_unreturned_orders()
    assert enqueued == []


def test_the_sweep_task_never_asks_for_help_on_sqlite(enqueued, settings):
    from orders.tasks import sweep_unreturned_orders

    if connection.vendor == "postgresql":
        pytest.skip("the SQLite rule")
    settings.SWEEP_WORKERS = 3
    due_orders(3)

    assert "helpers=0" in sweep_unreturned_orders()
    assert enqueued == []
