"""`orders.evidence`: loading diagnosis evidence in a constant number of queries, and
spotting provider outages. Orders and attempts are built through `orders.services`;
checks, callbacks and events are written directly, as the engine and webhooks would."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orders import services
from orders.causes import Cause
from orders.diagnosis import diagnose
from orders.evidence import detect_outage_providers, gather_evidence
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.states import AttemptStatus, OrderStatus
from tests.orders.factories import SETUP_ACTOR, MerchantFactory, order_in_status, submitted_order

pytestmark = pytest.mark.django_db

Kind = OrderEvent.Kind


def add_check(attempt: PaymentAttempt, *, at, status: str = "", error: str = "none", **fields) -> PaymentCheck:
    return PaymentCheck.objects.create(
        attempt=attempt,
        source=fields.pop("source", PaymentCheck.Source.SCHEDULED),
        reported_status=status if error == "none" else "",
        error_kind=error,
        checked_at=at,
        **fields,
    )


def add_callback(attempt: PaymentAttempt, *, valid: bool, event_id: str) -> ProviderCallback:
    return ProviderCallback.objects.create(
        provider=attempt.provider, event_id=event_id, attempt=attempt, signature_valid=valid, body="{}"
    )


def add_event(order: Order, kind: str, *, at, data: dict | None = None) -> OrderEvent:
    return OrderEvent.objects.create(order=order, kind=kind, actor_kind="system", data=data or {}, created_at=at)


def paid_order(**kwargs) -> Order:
    return order_in_status(OrderStatus.PAID, **kwargs)


def test_gather_evidence_reads_each_fact_of_each_order() -> None:
    now = timezone.now()
    merchant = MerchantFactory(stuck_after=timedelta(minutes=10))

    fresh = submitted_order(merchant=merchant)

    waiting = submitted_order(merchant=merchant, amount=Decimal("99.50"))
    attempt = services.create_payment_attempt(
        order=waiting, provider="sandbox", provider_reference="sbx_1", actor=SETUP_ACTOR
    )
    services.transition_attempt(attempt=attempt, to=AttemptStatus.PENDING, action_required="3ds", actor=SETUP_ACTOR)
    for minutes in range(7, 0, -1):  # seven checks, the newest one minute ago
        add_check(attempt, at=now - timedelta(minutes=minutes), status="pending", reported_amount=Decimal("99.50"))
    add_check(attempt, at=now - timedelta(seconds=10), error="timeout")
    add_callback(attempt, valid=False, event_id="evt-forged")

    paid = paid_order(merchant=merchant)
    paid_attempt = paid.attempts.get()
    add_callback(paid_attempt, valid=True, event_id="evt-real")
    for minutes in range(7, 0, -1):
        add_event(
            paid, Kind.CONFIRMATION_FAILED, at=now - timedelta(minutes=minutes), data={"error": f"boom {minutes}"}
        )
    add_event(
        paid,
        Kind.CONFIRMATION_FAILED,
        at=now - timedelta(seconds=5),
        data={"error": "validation", "validation": {"customer_phone": "Enter a valid phone number."}},
    )
    add_event(paid, Kind.ACCESS_REPORTED, at=now - timedelta(minutes=3))
    add_event(paid, Kind.ACCESS_REPORTED, at=now - timedelta(minutes=2))
    add_event(paid, Kind.UNFLAGGED, at=now - timedelta(minutes=30), data={"cause": "duplicate_payment"})
    add_event(paid, Kind.UNFLAGGED, at=now - timedelta(minutes=20), data={"cause": "amount_mismatch"})
    add_event(paid, Kind.UNFLAGGED, at=now - timedelta(minutes=10), data={"cause": "result_unknown"})

    evidence = gather_evidence([fresh.pk, waiting.pk, paid.pk, 10**9])

    assert set(evidence) == {fresh.pk, waiting.pk, paid.pk}

    f = evidence[fresh.pk]
    assert (f.status, f.stuck_after, f.attempts, f.access_reports) == ("submitted", timedelta(minutes=10), (), 0)
    assert (f.amount, f.currency, f.reference, f.money_reviewed_at) == (Decimal("128.00"), "CNY", fresh.reference, None)
    assert f.status_changed_at == fresh.status_changed_at and f.submitted_at == fresh.submitted_at

    w = evidence[waiting.pk]
    assert w.status == OrderStatus.PAYMENT_PENDING and w.amount == Decimal("99.50")
    (a,) = w.attempts
    assert (a.id, a.provider, a.provider_reference, a.status, a.action_required) == (
        attempt.pk,
        "sandbox",
        "sbx_1",
        "pending",
        "3ds",
    )
    assert (a.amount, a.currency, a.has_callback) == (
        Decimal("99.50"),
        "CNY",
        False,
    )  # the forged callback does not count
    assert len(a.recent_checks) == 5
    assert [c.checked_at for c in a.recent_checks] == sorted((c.checked_at for c in a.recent_checks), reverse=True)
    newest = a.recent_checks[0]
    assert (newest.error_kind, newest.reported_status) == ("timeout", "")
    assert (a.recent_checks[1].reported_status, a.recent_checks[1].reported_amount) == ("pending", Decimal("99.50"))
    assert a.recent_checks[-1].checked_at == now - timedelta(minutes=4)

    p = evidence[paid.pk]
    (pa,) = p.attempts
    assert (pa.status, pa.has_callback) == ("succeeded", True)
    assert p.confirmation_failure_count == 8
    assert len(p.confirmation_failures) == 5
    latest = p.confirmation_failures[0]
    assert latest["validation"] == {"customer_phone": "Enter a valid phone number."}
    assert [f["error"] for f in p.confirmation_failures[1:]] == ["boom 1", "boom 2", "boom 3", "boom 4"]
    assert "validation" not in p.confirmation_failures[1]
    assert p.access_reports == 2
    # Only the resolution of a money cause counts, and the latest one.
    assert p.money_reviewed_at == now - timedelta(minutes=20)

    # The evidence feeds the diagnosis as it is.
    later = now + timedelta(hours=1)
    assert diagnose(f, now=later).cause == Cause.NO_PAYMENT_STARTED
    assert diagnose(w, now=later).cause == Cause.RESULT_UNKNOWN
    assert diagnose(p, now=later).cause == Cause.INVALID_CUSTOMER_DATA


def test_attempts_come_newest_first() -> None:
    order = submitted_order()
    t0 = timezone.now() - timedelta(minutes=30)
    first = services.create_payment_attempt(order=order, provider="sandbox", actor=SETUP_ACTOR, created_at=t0)
    services.transition_attempt(attempt=first, to=AttemptStatus.FAILED, failure_code="card_declined", actor=SETUP_ACTOR)
    services.transition_order(order=order, to=OrderStatus.PAYMENT_FAILED, actor=SETUP_ACTOR)
    second = services.create_payment_attempt(
        order=order, provider="alipay", actor=SETUP_ACTOR, created_at=t0 + timedelta(minutes=10), status="unknown"
    )
    (evidence,) = gather_evidence([order.pk]).values()
    assert [a.id for a in evidence.attempts] == [second.pk, first.pk]
    assert evidence.attempts[1].failure_code == "card_declined"
    assert evidence.attempts[1].status_changed_at is not None


def test_empty_batch_asks_nothing(django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        assert gather_evidence([]) == {}


def _busy_order(merchant) -> int:
    """An order with two attempts, checks, callbacks and events: every query has rows."""
    now = timezone.now()
    order = submitted_order(merchant=merchant)
    first = services.create_payment_attempt(order=order, provider="sandbox", actor=SETUP_ACTOR)
    services.transition_attempt(attempt=first, to=AttemptStatus.FAILED, actor=SETUP_ACTOR)
    second = services.create_payment_attempt(order=order, provider="sandbox", actor=SETUP_ACTOR)
    for attempt in (first, second):
        for minutes in range(1, 8):
            add_check(attempt, at=now - timedelta(minutes=minutes), error="timeout")
        add_callback(attempt, valid=True, event_id=f"evt-{attempt.pk}")
    add_event(order, Kind.CONFIRMATION_FAILED, at=now, data={"error": "x"})
    add_event(order, Kind.ACCESS_REPORTED, at=now)
    return order.pk


def test_query_count_does_not_grow_with_the_batch() -> None:
    merchant = MerchantFactory()
    ids = [_busy_order(merchant) for _ in range(30)]

    with CaptureQueriesContext(connection) as small:
        few = gather_evidence(ids[:3])
    with CaptureQueriesContext(connection) as large:
        many = gather_evidence(ids)

    assert len(small.captured_queries) == len(large.captured_queries) == 5
    assert len(few) == 3 and len(many) == 30
    for evidence in many.values():
        open_attempt, failed_attempt = evidence.attempts
        assert len(open_attempt.recent_checks) == 5
        # A failed attempt took no money: its checks are not loaded.
        assert failed_attempt.status == "failed" and failed_attempt.recent_checks == ()


# --- provider outages --------------------------------------------------------------------------------


def _attempts(provider: str, count: int, *, created_at, status: str = "pending") -> list[PaymentAttempt]:
    """`count` attempts at `provider`, spread over a few orders the way real traffic is."""
    merchant = MerchantFactory()
    orders = [submitted_order(merchant=merchant) for _ in range(3)]
    return [
        services.create_payment_attempt(
            order=orders[i % 3], provider=provider, actor=SETUP_ACTOR, status=status, created_at=created_at
        )
        for i in range(count)
    ]


def test_outage_is_found_and_a_healthy_provider_is_ignored(django_assert_num_queries) -> None:
    now = timezone.now()
    recent = now - timedelta(minutes=3)

    # Down: every recent attempt's latest check could not reach the provider.
    for attempt in _attempts("flaky", 6, created_at=recent):
        add_check(attempt, at=now - timedelta(minutes=2), status="pending")
        add_check(attempt, at=now - timedelta(minutes=1), error="connection")
    # Unknown results count too: the provider never answered when the payment was created.
    _attempts("silent", 5, created_at=recent, status="unknown")
    # Healthy: an old timeout, then an answer.
    for attempt in _attempts("healthy", 6, created_at=recent):
        add_check(attempt, at=now - timedelta(minutes=2), error="timeout")
        add_check(attempt, at=now - timedelta(minutes=1), status="pending")
    # Busy: five failing attempts, but among many that are fine.
    for index, attempt in enumerate(_attempts("busy", 12, created_at=recent)):
        add_check(
            attempt, at=now - timedelta(minutes=1), **({"error": "timeout"} if index < 5 else {"status": "pending"})
        )
    # Was down an hour ago, outside the window.
    for attempt in _attempts("past", 6, created_at=now - timedelta(hours=1)):
        add_check(attempt, at=now - timedelta(minutes=50), error="timeout")
    # Failed attempts with timed-out checks are closed: nothing is stuck there.
    for attempt in _attempts("closed", 6, created_at=recent):
        add_check(attempt, at=now - timedelta(minutes=1), error="timeout")
        services.transition_attempt(attempt=attempt, to=AttemptStatus.FAILED, actor=SETUP_ACTOR)

    with django_assert_num_queries(1):
        found = detect_outage_providers(now=now, min_attempts=5)

    assert found == frozenset({"flaky", "silent"})
    assert detect_outage_providers(now=now, min_attempts=7) == frozenset()
    assert detect_outage_providers(now=now, min_attempts=5, min_share=0.4) == frozenset({"flaky", "silent", "busy"})
