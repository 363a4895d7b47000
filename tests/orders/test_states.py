"""Every move in the order and attempt transition tables, allowed and forbidden, through the services.

The cross product of statuses is enumerated from `orders.states`, so a status added there is
covered here without touching this file. Starting states are reached along legal paths
(`order_in_status`, `attempt_in_status`), never by assigning `status`.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.exceptions import IllegalTransition
from orders.models import Order, OrderEvent
from orders.states import (
    ATTEMPT_FINAL,
    ATTEMPT_TRANSITIONS,
    ORDER_TERMINAL,
    ORDER_TRANSITIONS,
    AttemptStatus,
    OrderStatus,
)
from tests.orders.factories import (
    ORDER_PATHS,
    PaymentAttemptFactory,
    StaffUserFactory,
    attempt_in_status,
    order_in_status,
)

pytestmark = pytest.mark.django_db

ORDER_PAIRS = list(itertools.product(OrderStatus.values, OrderStatus.values))
ATTEMPT_PAIRS = list(itertools.product(AttemptStatus.values, AttemptStatus.values))
ALLOWED_ORDER_MOVES = [(a, b) for a, b in ORDER_PAIRS if b in ORDER_TRANSITIONS[a]]
FORBIDDEN_ORDER_MOVES = [(a, b) for a, b in ORDER_PAIRS if b not in ORDER_TRANSITIONS[a]]
ALLOWED_ATTEMPT_MOVES = [(a, b) for a, b in ATTEMPT_PAIRS if b in ATTEMPT_TRANSITIONS[a]]
FORBIDDEN_ATTEMPT_MOVES = [(a, b) for a, b in ATTEMPT_PAIRS if b not in ATTEMPT_TRANSITIONS[a]]


def _ids(pairs):
    return [f"{a}->{b}" for a, b in pairs]


def _snapshot(instance) -> dict:
    """Every column of the row, as the database has it now."""
    return type(instance).objects.filter(pk=instance.pk).values().get()


def _label(status_enum, value: str) -> str:
    return str(status_enum(value).label)


@pytest.fixture
def staff_actor():
    return Actor.staff(StaffUserFactory())


def _move_order(order: Order, to: str, actor: Actor) -> Order:
    """Move through the service a caller would use: `paid` is reached from a succeeded attempt."""
    if to == OrderStatus.PAID:
        attempt = order.attempts.get()
        services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=actor)
        return services.mark_order_paid(attempt=attempt, actor=actor, reason="provider confirmed")
    return services.transition_order(order=order, to=to, actor=actor, reason="desk decision")


# --- the tables themselves -------------------------------------------------------------------


def test_the_tables_cover_every_status():
    assert set(ORDER_TRANSITIONS) == set(OrderStatus.values)
    assert set(ATTEMPT_TRANSITIONS) == set(AttemptStatus.values)


def test_terminal_orders_can_only_be_refunded():
    for status in ORDER_TERMINAL:
        assert ORDER_TRANSITIONS[status] <= {OrderStatus.REFUNDED}


def test_final_attempts_have_no_way_out():
    for status in ATTEMPT_FINAL:
        assert ATTEMPT_TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize("status", OrderStatus.values)
def test_order_in_status_walks_a_legal_path_to_the_status(status):
    order = order_in_status(status)

    assert order.status == status
    moves = list(
        order.events.filter(kind=OrderEvent.Kind.STATUS_CHANGED).order_by("pk").values_list("data__from", "data__to")
    )
    expected_path = [OrderStatus.SUBMITTED, *ORDER_PATHS[status]]
    assert moves == list(zip(expected_path, expected_path[1:]))


# --- orders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), ALLOWED_ORDER_MOVES, ids=_ids(ALLOWED_ORDER_MOVES))
def test_allowed_order_move_changes_status_and_writes_one_event(current, target, staff_actor):
    order = order_in_status(current)
    events_before = set(order.events.values_list("pk", flat=True))

    returned = _move_order(order, target, staff_actor)

    order.refresh_from_db()
    assert returned.status == order.status == target
    new_events = order.events.exclude(pk__in=events_before).filter(kind=OrderEvent.Kind.STATUS_CHANGED)
    assert new_events.count() == 1
    event = new_events.get()
    assert (event.data["from"], event.data["to"]) == (current, target)
    assert event.actor_kind == OrderEvent.ActorKind.STAFF
    assert event.actor_user_id == staff_actor.user_id


@pytest.mark.parametrize(("current", "target"), FORBIDDEN_ORDER_MOVES, ids=_ids(FORBIDDEN_ORDER_MOVES))
def test_forbidden_order_move_raises_and_changes_nothing(
    current, target, staff_actor, django_capture_on_commit_callbacks
):
    order = order_in_status(current)
    before = _snapshot(order)
    events_before = OrderEvent.objects.count()

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(IllegalTransition) as excinfo:
        services.transition_order(
            order=order,
            to=target,
            actor=staff_actor,
            reason="desk decision",
            # Enough to pass the amount check, so only the table can refuse a move to paid.
            captured_amount=order.amount if target == OrderStatus.PAID else None,
        )

    assert _snapshot(order) == before
    assert OrderEvent.objects.count() == events_before
    assert callbacks == []
    message = str(excinfo.value)
    assert order.reference in message
    assert _label(OrderStatus, current) in message
    assert _label(OrderStatus, target) in message


# Every status but payment_pending owns a succeeded attempt here (or gets one late, after the
# order moved on), so mark_order_paid can only be refused by the transition table.
MARK_PAID_FORBIDDEN_FROM = [s for s in OrderStatus.values if OrderStatus.PAID not in ORDER_TRANSITIONS[s]]
MARK_PAID_FORBIDDEN_FROM.remove(OrderStatus.SUBMITTED)  # no attempt can exist without leaving submitted


@pytest.mark.parametrize("current", MARK_PAID_FORBIDDEN_FROM)
def test_mark_order_paid_is_refused_unless_payment_pending(current, staff_actor):
    order = order_in_status(current, with_attempt=True)
    attempt = order.attempts.latest("pk")
    if attempt.status != AttemptStatus.SUCCEEDED:
        if attempt.status in ATTEMPT_FINAL:
            # A failed order's attempt is final; a second provider may still report success.
            attempt = PaymentAttemptFactory(order=order, provider="other")
        services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=staff_actor)
    before = _snapshot(order)
    events_before = OrderEvent.objects.count()

    with pytest.raises(IllegalTransition) as excinfo:
        services.mark_order_paid(attempt=attempt, actor=staff_actor)

    assert _snapshot(order) == before
    assert OrderEvent.objects.count() == events_before
    assert _label(OrderStatus, current) in str(excinfo.value)


def test_transition_order_to_paid_with_captured_amount_records_it(staff_actor):
    order = order_in_status(OrderStatus.PAYMENT_PENDING)

    services.transition_order(order=order, to=OrderStatus.PAID, actor=staff_actor, captured_amount=Decimal("100.00"))

    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert order.captured_amount == Decimal("100.00")


def test_unknown_target_status_is_an_illegal_transition(staff_actor):
    order = order_in_status(OrderStatus.SUBMITTED)

    with pytest.raises(IllegalTransition, match="teleported"):
        services.transition_order(order=order, to="teleported", actor=staff_actor)

    order.refresh_from_db()
    assert order.status == OrderStatus.SUBMITTED


def test_a_stale_copy_cannot_make_an_illegal_move(staff_actor):
    stale = order_in_status(OrderStatus.PAYMENT_PENDING)
    services.transition_order(order=stale.pk, to=OrderStatus.CANCELLED, actor=staff_actor)

    # `stale` still says payment_pending, from where expired would be legal.
    with pytest.raises(IllegalTransition):
        services.transition_order(order=stale, to=OrderStatus.EXPIRED, actor=staff_actor)

    assert Order.objects.get(pk=stale.pk).status == OrderStatus.CANCELLED


# --- payment attempts ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", AttemptStatus.values)
def test_attempt_in_status_reaches_the_status_through_the_services(status):
    attempt = attempt_in_status(status)

    assert attempt.status == status
    moves = attempt.events.filter(kind=OrderEvent.Kind.ATTEMPT_STATUS_CHANGED).count()
    assert moves == (0 if status == AttemptStatus.INITIATED else 1)


@pytest.mark.parametrize(("current", "target"), ALLOWED_ATTEMPT_MOVES, ids=_ids(ALLOWED_ATTEMPT_MOVES))
def test_allowed_attempt_move_changes_status_and_writes_one_event(current, target, staff_actor):
    attempt = attempt_in_status(current)
    events_before = set(OrderEvent.objects.values_list("pk", flat=True))

    returned = services.transition_attempt(attempt=attempt, to=target, actor=staff_actor, reason="provider said so")

    attempt.refresh_from_db()
    assert returned.status == attempt.status == target
    new_events = OrderEvent.objects.exclude(pk__in=events_before)
    assert [e.kind for e in new_events] == [OrderEvent.Kind.ATTEMPT_STATUS_CHANGED]
    event = new_events.get()
    assert event.attempt_id == attempt.pk
    assert event.order_id == attempt.order_id
    assert (event.data["from"], event.data["to"]) == (current, target)
    assert event.actor_kind == OrderEvent.ActorKind.STAFF
    assert event.message == "provider said so"


@pytest.mark.parametrize(("current", "target"), FORBIDDEN_ATTEMPT_MOVES, ids=_ids(FORBIDDEN_ATTEMPT_MOVES))
def test_forbidden_attempt_move_raises_and_changes_nothing(current, target, staff_actor):
    attempt = attempt_in_status(current)
    before = _snapshot(attempt)
    order_before = _snapshot(attempt.order)
    events_before = OrderEvent.objects.count()

    with pytest.raises(IllegalTransition) as excinfo:
        services.transition_attempt(attempt=attempt, to=target, actor=staff_actor, failure_code="late_news")

    assert _snapshot(attempt) == before
    assert _snapshot(attempt.order) == order_before
    assert OrderEvent.objects.count() == events_before
    message = str(excinfo.value)
    assert str(attempt) in message
    assert _label(AttemptStatus, current) in message
    assert _label(AttemptStatus, target) in message


@pytest.mark.parametrize("target", sorted(ATTEMPT_FINAL))
def test_final_attempt_move_stops_the_check_schedule(target, staff_actor):
    order = order_in_status(OrderStatus.SUBMITTED)
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", actor=staff_actor, status=AttemptStatus.PENDING,
        next_check_at=timezone.now(),
    )

    services.transition_attempt(attempt=attempt, to=target, actor=staff_actor)

    attempt.refresh_from_db()
    assert attempt.next_check_at is None
