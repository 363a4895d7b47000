"""The write path in `orders.services`: validation, events, the unreturned flag, the signal,
and the database constraints behind them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.causes import Category, Cause
from orders.exceptions import Conflict, IllegalTransition, ValidationFailed
from orders.models import Order, OrderEvent, PaymentAttempt
from orders.signals import order_state_changed
from orders.states import ORDER_TERMINAL, AttemptStatus, OrderStatus
from tests.orders.factories import (
    MerchantFactory,
    PaymentAttemptFactory,
    StaffUserFactory,
    UserFactory,
    order_in_status,
    submitted_order,
)

pytestmark = pytest.mark.django_db

Kind = OrderEvent.Kind
SYSTEM = Actor.system("tests")


def _create(**overrides) -> Order:
    kwargs = {
        "merchant": overrides.pop("merchant", None) or MerchantFactory(),
        "reference": "ORD-1",
        "amount": Decimal("99.50"),
        "currency": "CNY",
        "customer_name": "Li Wei",
        "customer_email": "li.wei@example.com",
        "actor": SYSTEM,
        **overrides,
    }
    return services.create_order(**kwargs)


def _status_events(order: Order):
    return OrderEvent.objects.filter(order=order, kind=Kind.STATUS_CHANGED).order_by("pk")


def _flag(order: Order, *, cause: str = Cause.RESULT_UNKNOWN, needs_review: bool = False) -> None:
    # The flag is not status: the sweep raises it with a plain update of the flag fields.
    Order.objects.filter(pk=order.pk).update(
        stuck_since=timezone.now() - timedelta(minutes=30),
        stuck_cause=cause,
        stuck_category=Category.NETWORK if cause == Cause.RESULT_UNKNOWN else Category.SYSTEM,
        needs_review=needs_review,
    )


@pytest.fixture
def signal_calls():
    calls: list[dict] = []

    def receiver(sender, signal, **kwargs):
        calls.append({"sender": sender, **kwargs})

    order_state_changed.connect(receiver, weak=False)
    yield calls
    order_state_changed.disconnect(receiver)


# --- create_order --------------------------------------------------------------------------------


def test_create_order_records_a_submitted_order_and_its_created_event():
    order = _create(reference="ORD-7", amount=Decimal("12.30"))

    order.refresh_from_db()
    assert (order.status, order.amount, order.captured_amount) == (OrderStatus.SUBMITTED, Decimal("12.30"), 0)
    assert order.stuck_since is None
    event = order.events.get()
    assert event.kind == Kind.CREATED
    assert event.data == {"amount": "12.30", "currency": "CNY", "actor_label": "tests"}


@pytest.mark.parametrize("currency", ["ABC", "usd", "US", "", "EURO", "XXX"])
def test_create_order_refuses_a_currency_outside_iso_4217(currency):
    with pytest.raises(ValidationFailed, match="ISO 4217"):
        _create(currency=currency)

    assert not Order.objects.exists()
    assert not OrderEvent.objects.exists()


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("0.00"), Decimal("-1.00")])
def test_create_order_refuses_an_amount_not_above_zero(amount):
    with pytest.raises(ValidationFailed, match="greater than zero"):
        _create(amount=amount)

    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("JPY", Decimal("100.5")), ("CNY", Decimal("1.234")), ("USD", Decimal("0.001")), ("BHD", Decimal("1.2345"))],
)
def test_create_order_refuses_more_decimal_places_than_the_currency_has(currency, amount):
    with pytest.raises(ValidationFailed, match=f"{currency} amounts have at most"):
        _create(currency=currency, amount=amount)

    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("currency", "amount"),
    [("JPY", Decimal("100")), ("JPY", Decimal("100.00")), ("CNY", Decimal("0.01")), ("USD", Decimal("10.5"))],
)
def test_create_order_accepts_amounts_within_the_currency_decimal_places(currency, amount):
    order = _create(currency=currency, amount=amount)

    assert Order.objects.get(pk=order.pk).amount == amount


def test_create_order_refuses_an_amount_the_database_would_round():
    # BHD has 3 decimal places but amounts are stored with 2: 1.234 would silently become 1.23.
    with pytest.raises(ValidationFailed, match="more than 2 decimal places"):
        _create(currency="BHD", amount=Decimal("1.234"))

    assert not Order.objects.exists()


def test_create_order_refuses_an_amount_too_large_to_store():
    with pytest.raises(ValidationFailed, match="too large"):
        _create(amount=Decimal("1000000000000.00"))

    assert not Order.objects.exists()


def test_create_order_accepts_the_largest_storable_amount():
    order = _create(amount=Decimal("999999999999.99"))

    assert Order.objects.get(pk=order.pk).amount == Decimal("999999999999.99")


@pytest.mark.parametrize("reference", ["", "   "])
def test_create_order_refuses_a_blank_reference(reference):
    with pytest.raises(ValidationFailed, match="reference"):
        _create(reference=reference)

    assert not Order.objects.exists()


def test_create_order_strips_the_reference():
    order = _create(reference="  ORD-9 ")

    assert Order.objects.get(pk=order.pk).reference == "ORD-9"


def test_create_order_refuses_an_inactive_merchant():
    merchant = MerchantFactory(active=False)

    with pytest.raises(ValidationFailed, match="inactive"):
        _create(merchant=merchant)

    assert not Order.objects.exists()


@pytest.mark.parametrize("reused", ["ORD-1", " ORD-1 "])
def test_create_order_with_a_reused_reference_raises_duplicate_reference_and_writes_nothing(reused):
    merchant = MerchantFactory()
    first = _create(merchant=merchant, reference="ORD-1")

    with pytest.raises(services.DuplicateReference) as excinfo:
        _create(merchant=merchant, reference=reused, amount=Decimal("5.00"))

    assert excinfo.value.existing_id == first.pk
    assert excinfo.value.code == "duplicate_reference"
    assert "ORD-1" in str(excinfo.value)
    assert list(Order.objects.values_list("pk", "amount")) == [(first.pk, Decimal("99.50"))]
    assert OrderEvent.objects.count() == 1


def test_the_same_reference_is_free_at_another_merchant():
    _create(reference="ORD-1")

    _create(reference="ORD-1")

    assert Order.objects.filter(reference="ORD-1").count() == 2


# --- create_payment_attempt --------------------------------------------------------------------


def test_create_payment_attempt_moves_a_submitted_order_to_payment_pending():
    order = order_in_status(OrderStatus.SUBMITTED, amount=Decimal("42.00"), currency="USD")

    attempt = services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM)

    order.refresh_from_db()
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert (attempt.status, attempt.amount, attempt.currency) == (AttemptStatus.INITIATED, Decimal("42.00"), "USD")
    kinds = list(order.events.order_by("pk").values_list("kind", flat=True))
    assert kinds == [Kind.CREATED, Kind.ATTEMPT_CREATED, Kind.STATUS_CHANGED]
    created = order.events.get(kind=Kind.ATTEMPT_CREATED)
    assert created.attempt_id == attempt.pk
    assert created.data["provider"] == "sandbox"
    moved = order.events.get(kind=Kind.STATUS_CHANGED)
    assert (moved.data["from"], moved.data["to"], moved.data["attempt_id"]) == (
        OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, attempt.pk,
    )


def test_a_second_attempt_while_payment_pending_writes_no_status_change():
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    status_events = _status_events(order).count()

    services.create_payment_attempt(order=order, provider="other", actor=SYSTEM)

    order.refresh_from_db()
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert _status_events(order).count() == status_events
    assert order.events.filter(kind=Kind.ATTEMPT_CREATED).count() == 2


def test_a_new_attempt_revives_a_failed_order():
    order = order_in_status(OrderStatus.PAYMENT_FAILED)

    services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM)

    order.refresh_from_db()
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert _status_events(order).last().data["from"] == OrderStatus.PAYMENT_FAILED


@pytest.mark.parametrize("status", sorted({OrderStatus.PAID, *ORDER_TERMINAL}))
def test_create_payment_attempt_is_refused_once_paid_or_terminal(status):
    order = order_in_status(status)
    attempts_before = PaymentAttempt.objects.count()
    events_before = OrderEvent.objects.count()

    with pytest.raises(IllegalTransition, match=order.reference):
        services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM)

    assert PaymentAttempt.objects.count() == attempts_before
    assert OrderEvent.objects.count() == events_before
    assert Order.objects.get(pk=order.pk).status == status


@pytest.mark.parametrize("status", [AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, "bogus"])
def test_create_payment_attempt_refuses_to_start_in_a_final_status(status):
    order = order_in_status(OrderStatus.SUBMITTED)

    with pytest.raises(ValidationFailed):
        services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM, status=status)

    assert not PaymentAttempt.objects.exists()
    assert Order.objects.get(pk=order.pk).status == OrderStatus.SUBMITTED


def test_create_payment_attempt_refuses_a_reused_idempotency_key():
    order = order_in_status(OrderStatus.SUBMITTED)
    services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM, idempotency_key="key-1")
    events_before = OrderEvent.objects.count()

    with pytest.raises(Conflict, match="idempotency key"):
        services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM, idempotency_key="key-1")

    assert PaymentAttempt.objects.count() == 1
    assert OrderEvent.objects.count() == events_before


# --- mark_order_paid -------------------------------------------------------------------------------


def test_mark_order_paid_sets_the_captured_amount_from_the_succeeded_attempt():
    order = order_in_status(OrderStatus.PAYMENT_PENDING, amount=Decimal("77.70"))
    attempt = services.transition_attempt(attempt=order.attempts.get(), to=AttemptStatus.SUCCEEDED, actor=SYSTEM)

    services.mark_order_paid(attempt=attempt, actor=SYSTEM, reason="callback")

    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert order.captured_amount == Decimal("77.70")
    event = _status_events(order).last()
    assert (event.data["to"], event.data["attempt_id"], event.message) == (OrderStatus.PAID, attempt.pk, "callback")


@pytest.mark.parametrize("attempt_status", [s for s in AttemptStatus.values if s != AttemptStatus.SUCCEEDED])
def test_mark_order_paid_needs_a_succeeded_attempt(attempt_status):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    attempt = order.attempts.get()
    if attempt_status != AttemptStatus.INITIATED:
        services.transition_attempt(attempt=attempt, to=attempt_status, actor=SYSTEM)
    events_before = OrderEvent.objects.count()

    with pytest.raises(ValidationFailed, match="has not succeeded"):
        services.mark_order_paid(attempt=attempt, actor=SYSTEM)

    order.refresh_from_db()
    assert (order.status, order.captured_amount) == (OrderStatus.PAYMENT_PENDING, 0)
    assert OrderEvent.objects.count() == events_before


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(Decimal("99.00"), "CNY"), (Decimal("129.00"), "CNY"), (Decimal("128.00"), "USD")],
    ids=["less", "more", "other-currency"],
)
def test_mark_order_paid_refuses_an_attempt_whose_money_differs_from_the_order(amount, currency):
    order = order_in_status(OrderStatus.PAYMENT_PENDING, amount=Decimal("128.00"), currency="CNY")
    # The provider reported other money than the order: an attempt as the adapter would record it.
    odd = PaymentAttemptFactory(order=order, amount=amount, currency=currency)
    services.transition_attempt(attempt=odd, to=AttemptStatus.SUCCEEDED, actor=SYSTEM)
    events_before = OrderEvent.objects.count()

    with pytest.raises(ValidationFailed, match="does not match"):
        services.mark_order_paid(attempt=odd, actor=SYSTEM)

    order.refresh_from_db()
    assert (order.status, order.captured_amount) == (OrderStatus.PAYMENT_PENDING, 0)
    assert OrderEvent.objects.count() == events_before


@pytest.mark.parametrize("captured", [None, Decimal("0"), Decimal("128.01")], ids=["missing", "zero", "over"])
def test_transition_order_to_paid_needs_a_captured_amount_within_the_order_amount(captured):
    order = order_in_status(OrderStatus.PAYMENT_PENDING, amount=Decimal("128.00"))

    with pytest.raises(ValidationFailed):
        services.transition_order(order=order, to=OrderStatus.PAID, actor=SYSTEM, captured_amount=captured)

    order.refresh_from_db()
    assert (order.status, order.captured_amount) == (OrderStatus.PAYMENT_PENDING, 0)


# --- the unreturned flag ---------------------------------------------------------------------------

# (status to start from, terminal status to reach)
TERMINAL_MOVES = [
    (OrderStatus.PAID, OrderStatus.CONFIRMED),
    (OrderStatus.PAYMENT_PENDING, OrderStatus.CANCELLED),
    (OrderStatus.SUBMITTED, OrderStatus.EXPIRED),
    (OrderStatus.PAID, OrderStatus.REFUNDED),
]


def test_terminal_moves_cover_every_terminal_status():
    assert {to for _, to in TERMINAL_MOVES} == ORDER_TERMINAL


@pytest.mark.parametrize(("start", "terminal"), TERMINAL_MOVES, ids=[t for _, t in TERMINAL_MOVES])
def test_reaching_a_terminal_status_clears_the_unreturned_flag(start, terminal):
    order = order_in_status(start)
    _flag(order, needs_review=True)
    before = timezone.now()

    services.transition_order(order=order, to=terminal, actor=SYSTEM)

    order.refresh_from_db()
    assert order.status == terminal
    assert (order.stuck_since, order.stuck_cause, order.stuck_category, order.needs_review) == (None, "", "", False)
    assert order.resolved_at is not None and order.resolved_at >= before
    assert _status_events(order).last().data["resolved_unreturned"] is True


@pytest.mark.parametrize("to", [OrderStatus.PAYMENT_FAILED, OrderStatus.PAID])
def test_a_non_terminal_move_keeps_the_unreturned_flag(to):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    _flag(order)

    if to == OrderStatus.PAID:
        attempt = services.transition_attempt(attempt=order.attempts.get(), to=AttemptStatus.SUCCEEDED, actor=SYSTEM)
        services.mark_order_paid(attempt=attempt, actor=SYSTEM)
    else:
        services.transition_order(order=order, to=to, actor=SYSTEM)

    order.refresh_from_db()
    assert order.status == to
    assert (order.stuck_cause, order.resolved_at) == (Cause.RESULT_UNKNOWN, None)
    assert order.stuck_since is not None
    assert "resolved_unreturned" not in _status_events(order).last().data


def test_a_terminal_move_of_an_order_that_was_never_flagged_sets_no_resolved_at():
    order = order_in_status(OrderStatus.SUBMITTED)

    services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=SYSTEM)

    order.refresh_from_db()
    assert order.resolved_at is None
    assert "resolved_unreturned" not in _status_events(order).last().data


# --- the order_state_changed signal ----------------------------------------------------------------


def test_the_signal_is_sent_only_after_commit_with_the_documented_arguments(
    signal_calls, django_capture_on_commit_callbacks
):
    order = order_in_status(OrderStatus.SUBMITTED)
    staff = StaffUserFactory()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=Actor.staff(staff))
        assert signal_calls == []

    assert len(callbacks) == 1
    assert signal_calls == [
        {
            "sender": Order,
            "order_id": order.pk,
            "old_status": OrderStatus.SUBMITTED,
            "new_status": OrderStatus.CANCELLED,
            "was_unreturned": False,
            "is_unreturned": False,
            "cause": "",
            "actor_kind": "staff",
        }
    ]


def test_the_signal_reports_a_cleared_flag(signal_calls, django_capture_on_commit_callbacks):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    _flag(order, cause=Cause.RESULT_UNKNOWN)

    with django_capture_on_commit_callbacks(execute=True):
        services.transition_order(order=order, to=OrderStatus.EXPIRED, actor=SYSTEM)

    assert [(c["old_status"], c["new_status"], c["was_unreturned"], c["is_unreturned"], c["cause"], c["actor_kind"])
            for c in signal_calls] == [
        (OrderStatus.PAYMENT_PENDING, OrderStatus.EXPIRED, True, False, "", "system")
    ]


def test_the_signal_reports_a_flag_that_stays(signal_calls, django_capture_on_commit_callbacks):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    _flag(order, cause=Cause.RESULT_UNKNOWN)

    with django_capture_on_commit_callbacks(execute=True):
        services.transition_order(order=order, to=OrderStatus.PAYMENT_FAILED, actor=Actor.provider("sandbox"))

    assert [(c["was_unreturned"], c["is_unreturned"], c["cause"], c["actor_kind"]) for c in signal_calls] == [
        (True, True, Cause.RESULT_UNKNOWN, "provider")
    ]


def test_starting_a_payment_sends_the_signal_once(signal_calls, django_capture_on_commit_callbacks):
    order = order_in_status(OrderStatus.SUBMITTED)

    with django_capture_on_commit_callbacks(execute=True):
        services.create_payment_attempt(order=order, provider="sandbox", actor=SYSTEM)

    assert [(c["order_id"], c["old_status"], c["new_status"]) for c in signal_calls] == [
        (order.pk, OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING)
    ]


def test_a_refused_move_sends_no_signal(signal_calls, django_capture_on_commit_callbacks):
    order = order_in_status(OrderStatus.CANCELLED)

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(IllegalTransition):
        services.transition_order(order=order, to=OrderStatus.CONFIRMED, actor=SYSTEM)

    assert callbacks == []
    assert signal_calls == []


def test_an_attempt_move_sends_no_signal(signal_calls, django_capture_on_commit_callbacks):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)

    with django_capture_on_commit_callbacks(execute=True):
        services.transition_attempt(attempt=order.attempts.get(), to=AttemptStatus.PENDING, actor=SYSTEM)

    assert signal_calls == []


@pytest.mark.django_db(transaction=True)
def test_the_signal_is_sent_when_the_callers_transaction_commits(signal_calls):
    order = order_in_status(OrderStatus.SUBMITTED)

    with transaction.atomic():
        services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=SYSTEM)
        assert signal_calls == []

    assert [c["new_status"] for c in signal_calls] == [OrderStatus.CANCELLED]


@pytest.mark.django_db(transaction=True)
def test_the_signal_is_never_sent_when_the_callers_transaction_rolls_back(signal_calls):
    order = order_in_status(OrderStatus.SUBMITTED)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=SYSTEM)
        raise RuntimeError("the caller failed after the move")

    assert signal_calls == []
    order.refresh_from_db()
    assert order.status == OrderStatus.SUBMITTED
    assert not _status_events(order).exists()


# --- events: one per change, with actor and reason ------------------------------------------------


@pytest.mark.parametrize(
    ("make_actor", "kind", "label"),
    [
        (lambda: Actor.staff(StaffUserFactory()), "staff", None),
        (lambda: Actor.merchant(UserFactory()), "merchant", None),
        (lambda: Actor.system("sweep"), "system", "sweep"),
        (lambda: Actor.provider("sandbox"), "provider", "sandbox"),
        (lambda: Actor.customer("li.wei@example.com"), "customer", "li.wei@example.com"),
    ],
    ids=["staff", "merchant", "system", "provider", "customer"],
)
def test_a_status_change_writes_exactly_one_event_with_actor_and_reason(make_actor, kind, label):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)
    actor = make_actor()
    events_before = set(OrderEvent.objects.values_list("pk", flat=True))

    services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=actor, reason="customer asked")

    new = list(OrderEvent.objects.exclude(pk__in=events_before))
    assert len(new) == 1
    event = new[0]
    assert (event.order_id, event.kind, event.message) == (order.pk, Kind.STATUS_CHANGED, "customer asked")
    assert (event.actor_kind, event.actor_user_id) == (kind, actor.user_id)
    assert event.data.get("actor_label") == label
    assert (event.data["from"], event.data["to"]) == (OrderStatus.PAYMENT_PENDING, OrderStatus.CANCELLED)


def test_a_status_change_stamps_status_changed_at():
    order = order_in_status(OrderStatus.SUBMITTED)
    before = timezone.now()

    services.transition_order(order=order, to=OrderStatus.EXPIRED, actor=SYSTEM)

    order.refresh_from_db()
    assert order.status_changed_at >= before


def test_extra_event_data_is_kept_next_to_from_and_to():
    order = order_in_status(OrderStatus.SUBMITTED)

    services.transition_order(order=order, to=OrderStatus.CANCELLED, actor=SYSTEM, data={"ticket": 12})

    assert _status_events(order).get().data == {"from": "submitted", "to": "cancelled", "ticket": 12,
                                                 "actor_label": "tests"}


# --- OrderEvent is append-only ----------------------------------------------------------------------


def test_saving_an_existing_event_raises():
    order = order_in_status(OrderStatus.SUBMITTED)
    event = order.events.get()
    event.message = "rewritten"

    with pytest.raises(ValueError, match="append-only"):
        event.save()

    assert order.events.get().message == "Order submitted."


def test_a_new_event_cannot_overwrite_an_existing_one_by_reusing_its_pk():
    order = order_in_status(OrderStatus.SUBMITTED)
    original = order.events.get()

    with pytest.raises(IntegrityError), transaction.atomic():
        OrderEvent(pk=original.pk, order=order, kind=Kind.NOTE, actor_kind="staff", message="rewritten").save()

    assert order.events.get().message == original.message


def test_new_events_can_be_appended():
    order = order_in_status(OrderStatus.SUBMITTED)

    OrderEvent(order=order, kind=Kind.NOTE, actor_kind="staff", message="called the customer").save()

    assert order.events.count() == 2


# --- database constraints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fields", "constraint"),
    [
        (OrderStatus.SUBMITTED, {"captured_amount": Decimal("128.01")}, "order_captured_within_amount"),
        (OrderStatus.SUBMITTED, {"captured_amount": Decimal("-0.01")}, "order_captured_within_amount"),
        (OrderStatus.PAID, {"captured_amount": Decimal("0")}, "order_paid_has_capture"),
        (OrderStatus.SUBMITTED, {"amount": Decimal("0")}, "order_amount_positive"),
        (OrderStatus.SUBMITTED, {"reference": ""}, "order_reference_not_blank"),
        (OrderStatus.SUBMITTED, {"currency": "US"}, "order_currency_len3"),
        (OrderStatus.SUBMITTED, {"stuck_since": timezone.now()}, "order_stuck_flag_consistent"),
        (OrderStatus.SUBMITTED, {"stuck_cause": Cause.RESULT_UNKNOWN, "stuck_category": Category.NETWORK},
         "order_stuck_flag_consistent"),
        (OrderStatus.SUBMITTED, {"stuck_since": timezone.now(), "stuck_cause": Cause.RESULT_UNKNOWN},
         "order_stuck_flag_consistent"),
        (OrderStatus.SUBMITTED, {"stuck_since": timezone.now(), "stuck_cause": Cause.RESULT_UNKNOWN,
                                 "stuck_category": Category.NETWORK, "resolved_at": timezone.now()},
         "order_stuck_flag_consistent"),
        (OrderStatus.SUBMITTED, {"stuck_since": timezone.now(), "stuck_cause": "cosmic_rays",
                                 "stuck_category": Category.SYSTEM}, "order_stuck_cause_valid"),
    ],
    ids=[
        "captured-over-amount", "captured-negative", "paid-without-capture", "amount-zero", "blank-reference",
        "currency-two-letters", "flag-without-cause", "cause-without-flag", "flag-without-category",
        "flag-open-but-resolved", "unknown-cause",
    ],
)
def test_the_database_rejects_an_inconsistent_order(status, fields, constraint):
    order = order_in_status(status, amount=Decimal("128.00"))

    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        Order.objects.filter(pk=order.pk).update(**fields)

    assert constraint in str(excinfo.value)
    assert Order.objects.filter(pk=order.pk).values(*fields).get() != fields


def test_the_database_accepts_a_complete_flag():
    order = order_in_status(OrderStatus.SUBMITTED)

    _flag(order)

    order.refresh_from_db()
    assert order.is_unreturned


def test_the_database_rejects_a_second_order_with_the_same_reference():
    merchant = MerchantFactory()
    first = submitted_order(merchant=merchant)
    second = submitted_order(merchant=merchant)

    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=second.pk).update(reference=first.reference)


def test_the_database_rejects_a_scheduled_check_on_a_final_attempt():
    order = order_in_status(OrderStatus.PAID)

    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        PaymentAttempt.objects.filter(order=order).update(next_check_at=timezone.now())

    assert "attempt_check_only_when_open" in str(excinfo.value)
