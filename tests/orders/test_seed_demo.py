from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from orders import demo
from orders.causes import CAUSE_CATEGORY, Cause
from orders.currencies import MINOR_UNITS
from orders.models import (
    Merchant,
    MerchantMembership,
    Order,
    OrderEvent,
    PaymentAttempt,
    PaymentCheck,
    ProviderCallback,
)
from orders.states import ATTEMPT_OPEN, ORDER_CAPTURED, AttemptStatus, OrderStatus, order_move_allowed

pytestmark = pytest.mark.django_db

ORDERS = 300
NETWORK_ERRORS = {"timeout", "connection", "http_error"}


def seed(*, orders: int = ORDERS, seed: int = 7, **options) -> str:
    out = StringIO()
    call_command("seed_demo", orders=orders, seed=seed, no_progress=True, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def wipe_orders() -> None:
    OrderEvent.objects.all().delete()
    ProviderCallback.objects.all().delete()
    PaymentCheck.objects.all().delete()
    PaymentAttempt.objects.all().delete()
    Order.objects.all().delete()


def snapshot() -> list[tuple]:
    """Everything that must not depend on the wall clock."""
    orders = [
        (o.merchant.code, o.reference, o.amount, o.currency, o.status, o.stuck_cause, o.needs_review,
         o.customer_name, o.customer_email, o.attempts.count(), o.events.count())
        for o in Order.objects.select_related("merchant").order_by("merchant__code", "reference")
    ]
    attempts = list(
        PaymentAttempt.objects.order_by("order__reference", "idempotency_key").values_list(
            "order__reference", "provider", "provider_reference", "idempotency_key", "status", "failure_code",
            "check_count",
        )
    )
    callbacks = list(ProviderCallback.objects.order_by("event_id").values_list("provider", "event_id", "outcome"))
    return [*orders, *attempts, *callbacks]


def table_counts() -> dict[str, int]:
    models = [Merchant, MerchantMembership, Order, PaymentAttempt, PaymentCheck, ProviderCallback, OrderEvent,
              get_user_model(), Group]
    return {model.__name__: model.objects.count() for model in models}


def flagged(cause: str):
    orders = Order.objects.filter(stuck_cause=cause)
    assert orders.exists(), cause
    return orders


def test_every_status_and_every_cause_is_present():
    seed()

    assert set(Order.objects.values_list("status", flat=True)) == set(OrderStatus.values)
    assert set(Order.objects.exclude(stuck_cause="").values_list("stuck_cause", flat=True)) == set(Cause.values)
    assert Order.objects.count() == ORDERS


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    seed(seed=11)
    first = snapshot()
    wipe_orders()
    seed(seed=11)
    assert snapshot() == first
    wipe_orders()
    seed(seed=12)
    assert snapshot() != first


def test_a_second_run_adds_nothing():
    seed()
    before = table_counts()

    output = seed(orders=500)

    assert table_counts() == before
    assert "already exist" in output


def test_too_few_orders_is_refused():
    with pytest.raises(CommandError):
        seed(orders=demo.MIN_ORDERS - 1)


def test_demo_users_have_their_roles_and_passwords():
    output = seed()

    User = get_user_model()
    agent, lead, admin = (User.objects.get(username=name) for name in ("agent", "lead", "admin"))
    assert agent.is_staff and not agent.is_superuser
    assert list(agent.groups.values_list("name", flat=True)) == ["Support agent"]
    assert lead.is_staff and list(lead.groups.values_list("name", flat=True)) == ["Support lead"]
    assert admin.is_superuser and admin.is_staff
    first = Merchant.objects.get(code=demo.DEMO_MERCHANTS[0].code)
    for username, role in [("manager", "manager"), ("operator", "operator"), ("viewer", "viewer")]:
        user = User.objects.get(username=username)
        assert not user.is_staff
        assert list(user.memberships.values_list("merchant", "role")) == [(first.pk, role)]
    for login in demo.DEMO_LOGINS:
        assert User.objects.get(username=login.username).check_password(f"{login.username}-demo")
    assert "agent" in output and "agent-demo" not in output


def test_demo_logins_prints_the_passwords():
    output = seed(demo_logins=True)

    for login in demo.DEMO_LOGINS:
        assert f"{login.username}-demo" in output


def test_merchants_have_their_own_thresholds_and_currencies():
    seed()

    merchants = list(Merchant.objects.filter(code__in=[m.code for m in demo.DEMO_MERCHANTS]))
    assert len(merchants) == len(demo.DEMO_MERCHANTS)
    assert {m.default_currency for m in merchants} == {"CNY", "USD"}
    assert len({(m.stuck_after, m.escalate_after, m.expire_after) for m in merchants}) == len(merchants)
    for order in Order.objects.select_related("merchant"):
        assert order.currency == order.merchant.default_currency
        assert order.amount == order.amount.quantize(Decimal(1).scaleb(-MINOR_UNITS[order.currency]))


def test_timelines_follow_the_transition_table():
    seed()

    events = {}
    for event in OrderEvent.objects.filter(kind=OrderEvent.Kind.STATUS_CHANGED).order_by("created_at", "id"):
        events.setdefault(event.order_id, []).append(event)
    for order in Order.objects.all():
        status, changed_at = OrderStatus.SUBMITTED, order.submitted_at
        for event in events.get(order.pk, []):
            assert event.data["from"] == status
            assert order_move_allowed(status, event.data["to"]), (order.reference, status, event.data)
            status, changed_at = event.data["to"], event.created_at
        assert status == order.status, order.reference
        assert changed_at == order.status_changed_at, order.reference
        if order.status in ORDER_CAPTURED:
            assert order.captured_amount == order.amount
        if order.stuck_since:
            assert order.stuck_category == CAUSE_CATEGORY[order.stuck_cause]
            assert order.resolved_at is None
            assert order.stuck_since >= order.status_changed_at, order.reference
        else:
            assert order.stuck_cause == "" and order.stuck_category == ""
    assert not PaymentAttempt.objects.filter(next_check_at__isnull=False).exclude(status__in=ATTEMPT_OPEN).exists()


def test_unreturned_orders_are_older_than_their_merchants_threshold():
    seed()

    for order in Order.objects.exclude(stuck_since=None).select_related("merchant"):
        if order.stuck_cause in {Cause.DUPLICATE_PAYMENT, Cause.NO_ACCESS}:
            continue  # raised by an event, not by time
        assert order.stuck_since - order.merchant.stuck_after >= order.submitted_at, order.reference
    assert set(Order.objects.filter(needs_review=True).values_list("stuck_cause", flat=True)) >= {
        Cause.AMOUNT_MISMATCH, Cause.DUPLICATE_PAYMENT
    }


def test_duplicate_payment_has_two_succeeded_attempts():
    seed()

    for order in flagged(Cause.DUPLICATE_PAYMENT):
        assert order.attempts.filter(status=AttemptStatus.SUCCEEDED).count() == 2
        assert order.status == OrderStatus.PAID and order.needs_review


def test_payment_evidence_of_the_network_and_provider_causes():
    seed()

    for order in flagged(Cause.RESULT_UNKNOWN):
        attempt = order.attempts.get()
        assert attempt.status == AttemptStatus.UNKNOWN and order.status == OrderStatus.PAYMENT_PENDING
        kinds = list(attempt.checks.order_by("-checked_at").values_list("error_kind", flat=True))
        assert kinds[0] == "timeout" and set(kinds) <= {"timeout", "not_found"}

    for order in flagged(Cause.PROVIDER_UNREACHABLE):
        last = list(PaymentCheck.objects.filter(attempt__order=order).order_by("-checked_at")[:3])
        assert len(last) == 3 and all(check.error_kind != "none" for check in last)

    outage = PaymentAttempt.objects.filter(order__stuck_cause=Cause.PROVIDER_OUTAGE)
    assert set(outage.values_list("provider", flat=True)) == {demo.OUTAGE_PROVIDER}
    assert set(outage.values_list("status", flat=True)) <= {AttemptStatus.PENDING, AttemptStatus.UNKNOWN}
    assert not PaymentCheck.objects.filter(attempt__in=outage, error_kind="none").exists()
    times = sorted(outage.values_list("created_at", flat=True))
    assert max(sum(1 for t in times if start <= t < start + timedelta(minutes=10)) for start in times) >= 20

    for order in flagged(Cause.CALLBACK_LOST):
        attempt = order.attempts.get()
        assert order.status == OrderStatus.PAYMENT_PENDING
        assert attempt.checks.order_by("-checked_at").first().reported_status == AttemptStatus.SUCCEEDED
        assert not attempt.callbacks.exists()

    for order in flagged(Cause.AMOUNT_MISMATCH):
        check = PaymentCheck.objects.filter(attempt__order=order).order_by("-checked_at").first()
        assert (check.reported_amount, check.reported_currency) != (order.amount, order.currency)
        assert order.needs_review


def test_customer_and_system_evidence():
    seed()

    for order in flagged(Cause.NO_PAYMENT_STARTED):
        assert order.status == OrderStatus.SUBMITTED and not order.attempts.exists()

    for order in flagged(Cause.AWAITING_CUSTOMER_ACTION):
        attempt = order.attempts.get()
        assert attempt.status == AttemptStatus.PENDING and attempt.action_required in {"3ds", "bank_app"}

    for order in flagged(Cause.PAYMENT_DECLINED):
        assert order.status == OrderStatus.PAYMENT_FAILED
        attempt = order.attempts.get()
        assert attempt.status == AttemptStatus.FAILED and attempt.failure_code in demo._DECLINE_CODES

    for order in flagged(Cause.PROCESSING_ERROR):
        assert order.status == OrderStatus.PAID
        assert order.events.filter(kind=OrderEvent.Kind.CONFIRMATION_FAILED, data__has_key="error").exists()

    for order in flagged(Cause.INVALID_CUSTOMER_DATA):
        event = order.events.get(kind=OrderEvent.Kind.CONFIRMATION_FAILED)
        errors = event.data["validation"]
        assert errors
        if "customer_phone" in errors:
            assert not (order.customer_phone.isdigit() and len(order.customer_phone) == 11)
        if "shipping_address" in errors:
            assert len(order.shipping_address) < 5

    viewer = get_user_model().objects.get(username="viewer")
    for order in flagged(Cause.NO_ACCESS).select_related("merchant"):
        note = order.events.get(kind=OrderEvent.Kind.ACCESS_REPORTED)
        assert note.actor_kind == OrderEvent.ActorKind.MERCHANT and note.actor_user == viewer
        assert not viewer.memberships.filter(merchant=order.merchant).exists()


def test_callbacks_are_journaled_for_paid_orders():
    seed()

    healthy = Order.objects.filter(status=OrderStatus.CONFIRMED, stuck_since=None)
    with_callback = healthy.filter(attempts__callbacks__signature_valid=True).distinct().count()
    assert with_callback >= healthy.count() * 0.9
    rejected = ProviderCallback.objects.filter(signature_valid=False)
    assert rejected.exists()
    assert set(rejected.values_list("outcome", flat=True)) == {ProviderCallback.Outcome.REJECTED}


def test_the_outage_is_still_going_on_at_the_anchor_and_nothing_is_in_the_future():
    now = timezone.now().replace(microsecond=0)
    demo.seed_demo(orders=ORDERS, seed=5, now=now)

    recent = list(
        PaymentAttempt.objects.filter(
            provider=demo.OUTAGE_PROVIDER, created_at__gt=now - timedelta(minutes=10), created_at__lte=now
        )
    )
    failing = [
        a for a in recent
        if a.status in ATTEMPT_OPEN and (a.status == AttemptStatus.UNKNOWN or a.last_error_code in NETWORK_ERRORS)
    ]
    assert len(failing) >= 20 and len(failing) >= 0.5 * len(recent)
    assert not OrderEvent.objects.filter(created_at__gt=now).exists()
    assert not PaymentCheck.objects.filter(checked_at__gt=now).exists()
    assert not ProviderCallback.objects.filter(received_at__gt=now).exists()
    assert not Order.objects.filter(stuck_since__gt=now).exists()


def test_every_count_from_the_minimum_up_has_a_plan_with_healthy_orders():
    for orders in range(demo.MIN_ORDERS, demo.MIN_ORDERS * 20):
        assert demo.plan_counts(orders)["healthy"] >= 1
