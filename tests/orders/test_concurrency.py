"""Two writers race for one order on PostgreSQL: the row lock in the services lets exactly one win.

Each race starts both threads at a barrier, so they really call the service at the same time;
each thread uses (and closes) its own database connection. Every race is repeated over several
orders, because a single lucky interleaving proves little.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection

from orders import services
from orders.actors import Actor
from orders.exceptions import Conflict, IllegalTransition
from orders.models import Order, OrderEvent, PaymentAttempt
from orders.states import AttemptStatus, OrderStatus
from tests.orders.factories import order_in_status

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 10
ACTOR = Actor.system("race")


def race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in parallel threads released together; return each result or exception."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[index] = call()
        except BaseException as exc:  # the outcome under test, or a failure to report
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return outcomes


def _kinds(outcomes: list[object]) -> Counter:
    return Counter("ok" if not isinstance(o, BaseException) else type(o).__name__ for o in outcomes)


def _succeeded_attempts(order: Order, count: int) -> list[PaymentAttempt]:
    attempts = [order.attempts.get()]
    attempts += [
        services.create_payment_attempt(order=order, provider=f"provider-{n}", actor=ACTOR) for n in range(1, count)
    ]
    return [services.transition_attempt(attempt=a, to=AttemptStatus.SUCCEEDED, actor=ACTOR) for a in attempts]


def _status_changes_to(order: Order, *targets: str) -> int:
    return OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STATUS_CHANGED, data__to__in=targets).count()


def test_two_succeeded_attempts_marking_one_order_paid_pay_it_once(on_postgres):
    for _ in range(ROUNDS):
        order = order_in_status(OrderStatus.PAYMENT_PENDING)
        first, second = _succeeded_attempts(order, 2)

        outcomes = race(
            lambda: services.mark_order_paid(attempt=first.pk, actor=ACTOR),
            lambda: services.mark_order_paid(attempt=second.pk, actor=ACTOR),
        )

        assert _kinds(outcomes) == {"ok": 1, "IllegalTransition": 1}, outcomes
        order.refresh_from_db()
        assert (order.status, order.captured_amount) == (OrderStatus.PAID, order.amount)
        assert _status_changes_to(order, OrderStatus.PAID) == 1
        winner = next(o for o in outcomes if isinstance(o, Order))
        paid_event = order.events.get(kind=OrderEvent.Kind.STATUS_CHANGED, data__to=OrderStatus.PAID)
        assert paid_event.data["attempt_id"] in {first.pk, second.pk}
        assert winner.pk == order.pk


def test_the_same_attempt_marked_paid_twice_at_once_pays_once(on_postgres):
    for _ in range(ROUNDS):
        order = order_in_status(OrderStatus.PAYMENT_PENDING)
        (attempt,) = _succeeded_attempts(order, 1)

        outcomes = race(
            lambda: services.mark_order_paid(attempt=attempt.pk, actor=ACTOR),
            lambda: services.mark_order_paid(attempt=attempt.pk, actor=ACTOR),
        )

        assert _kinds(outcomes) == {"ok": 1, "IllegalTransition": 1}, outcomes
        assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID
        assert _status_changes_to(order, OrderStatus.PAID) == 1


def test_cancel_racing_mark_paid_lets_exactly_one_win(on_postgres):
    winners = Counter()
    for _ in range(ROUNDS):
        order = order_in_status(OrderStatus.PAYMENT_PENDING)
        (attempt,) = _succeeded_attempts(order, 1)

        outcomes = race(
            lambda: services.transition_order(order=order.pk, to=OrderStatus.CANCELLED, actor=ACTOR),
            lambda: services.mark_order_paid(attempt=attempt.pk, actor=ACTOR),
        )

        assert _kinds(outcomes) == {"ok": 1, "IllegalTransition": 1}, outcomes
        order.refresh_from_db()
        expected = OrderStatus.CANCELLED if isinstance(outcomes[0], Order) else OrderStatus.PAID
        assert order.status == expected
        assert order.captured_amount == (order.amount if expected == OrderStatus.PAID else 0)
        assert _status_changes_to(order, OrderStatus.CANCELLED, OrderStatus.PAID) == 1
        assert isinstance(outcomes[1 if expected == OrderStatus.CANCELLED else 0], IllegalTransition)
        winners[expected] += 1
    assert sum(winners.values()) == ROUNDS


def test_two_payment_attempts_with_one_idempotency_key_create_one_attempt(on_postgres):
    for round_ in range(ROUNDS):
        order = order_in_status(OrderStatus.SUBMITTED)
        key = f"checkout-{round_}-{order.pk}"

        outcomes = race(
            lambda: services.create_payment_attempt(order=order.pk, provider="sandbox", actor=ACTOR,
                                                    idempotency_key=key),
            lambda: services.create_payment_attempt(order=order.pk, provider="sandbox", actor=ACTOR,
                                                    idempotency_key=key),
        )

        assert _kinds(outcomes) == {"ok": 1, "Conflict": 1}, outcomes
        assert list(PaymentAttempt.objects.filter(order=order).values_list("idempotency_key", flat=True)) == [key]
        assert Order.objects.get(pk=order.pk).status == OrderStatus.PAYMENT_PENDING
        assert order.events.filter(kind=OrderEvent.Kind.ATTEMPT_CREATED).count() == 1
        assert _status_changes_to(order, OrderStatus.PAYMENT_PENDING) == 1


def test_one_idempotency_key_racing_across_two_orders_creates_one_attempt(on_postgres):
    for round_ in range(ROUNDS):
        left, right = order_in_status(OrderStatus.SUBMITTED), order_in_status(OrderStatus.SUBMITTED)
        key = f"shared-{round_}-{left.pk}"

        outcomes = race(
            lambda: services.create_payment_attempt(order=left.pk, provider="sandbox", actor=ACTOR,
                                                    idempotency_key=key),
            lambda: services.create_payment_attempt(order=right.pk, provider="sandbox", actor=ACTOR,
                                                    idempotency_key=key),
        )

        assert _kinds(outcomes) == {"ok": 1, "Conflict": 1}, outcomes
        assert PaymentAttempt.objects.filter(idempotency_key=key).count() == 1
        loser = right if isinstance(outcomes[1], Conflict) else left
        # The loser's transaction rolled back whole: no attempt, no event, no status change.
        assert Order.objects.get(pk=loser.pk).status == OrderStatus.SUBMITTED
        assert list(loser.events.values_list("kind", flat=True)) == [OrderEvent.Kind.CREATED]
