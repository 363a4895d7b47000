"""A model-based test of orders and payment attempts.

Hypothesis drives random sequences of service calls (create orders, start attempts, move
attempts, mark paid, move orders, raise the unreturned flag) against a plain-Python model
of what each call should do, and checks the database against the model after every step.

Each example runs inside its own savepoint that is rolled back in `teardown`, so examples
never see each other's rows (hypothesis' per-example hooks of `hypothesis.extra.django.TestCase`
do not reach a state machine run from inside a test method).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orders import services
from orders.actors import Actor
from orders.causes import Category, Cause
from orders.exceptions import IllegalTransition, ValidationFailed
from orders.models import Order, OrderEvent, PaymentAttempt
from orders.states import (
    ATTEMPT_FINAL,
    ATTEMPT_TRANSITIONS,
    ORDER_CAPTURED,
    ORDER_TERMINAL,
    ORDER_TRANSITIONS,
    AttemptStatus,
    OrderStatus,
    attempt_move_allowed,
    order_move_allowed,
)
from tests.orders.factories import MerchantFactory, submitted_order

ACTOR = Actor.system("stateful")
STARTABLE = (OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, OrderStatus.PAYMENT_FAILED)
# Few orders per run, so that each one lives through many steps.
MAX_ORDERS = 3
MINOR_UNIT = {"CNY": Decimal("0.01"), "USD": Decimal("0.01"), "JPY": Decimal("1")}


class OrderLifecycle(RuleBasedStateMachine):
    orders = Bundle("orders")
    attempts = Bundle("attempts")

    def __init__(self) -> None:
        super().__init__()
        self._example = transaction.atomic()
        self._example.__enter__()
        self.merchant = MerchantFactory()
        self.references = itertools.count(1)
        # The model: what the database must say.
        self.order_status: dict[int, str] = {}
        self.order_amount: dict[int, Decimal] = {}
        self.order_currency: dict[int, str] = {}
        self.captured: dict[int, Decimal] = {}
        self.order_moves: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self.flagged: set[int] = set()
        self.resolved: set[int] = set()
        self.attempt_status: dict[int, str] = {}
        self.attempt_order: dict[int, int] = {}
        self.attempt_moves: dict[int, list[tuple[str, str]]] = defaultdict(list)

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._example.__exit__(None, None, None)

    def _order_moved(self, order_id: int, to: str) -> None:
        self.order_moves[order_id].append((self.order_status[order_id], to))
        self.order_status[order_id] = to
        if to in ORDER_TERMINAL and order_id in self.flagged:
            self.flagged.discard(order_id)
            self.resolved.add(order_id)

    # --- rules -----------------------------------------------------------------------------------

    @precondition(lambda self: len(self.order_status) < MAX_ORDERS)
    @rule(target=orders, currency=st.sampled_from(sorted(MINOR_UNIT)), units=st.integers(1, 10**7))
    def create_order(self, currency: str, units: int) -> int:
        amount = units * MINOR_UNIT[currency]
        order = submitted_order(
            merchant=self.merchant, reference=f"SM-{next(self.references)}", amount=amount, currency=currency
        )
        self.order_status[order.pk] = OrderStatus.SUBMITTED
        self.order_amount[order.pk] = amount
        self.order_currency[order.pk] = currency
        self.captured[order.pk] = Decimal("0")
        return order.pk

    @rule(
        target=attempts,
        order_id=orders,
        status=st.sampled_from([AttemptStatus.INITIATED, AttemptStatus.PENDING, AttemptStatus.UNKNOWN]),
    )
    def start_attempt(self, order_id: int, status: str):
        if self.order_status[order_id] not in STARTABLE:
            with pytest.raises(IllegalTransition):
                services.create_payment_attempt(order=order_id, provider="sandbox", actor=ACTOR, status=status)
            return multiple()
        attempt = services.create_payment_attempt(order=order_id, provider="sandbox", actor=ACTOR, status=status)
        self.attempt_status[attempt.pk] = status
        self.attempt_order[attempt.pk] = order_id
        if self.order_status[order_id] != OrderStatus.PAYMENT_PENDING:
            self._order_moved(order_id, OrderStatus.PAYMENT_PENDING)
        return attempt.pk

    @rule(attempt_id=attempts, data=st.data())
    def advance_attempt(self, attempt_id: int, data) -> None:
        # Random targets are mostly refused; this rule keeps attempts reaching their outcomes.
        allowed = sorted(ATTEMPT_TRANSITIONS[self.attempt_status[attempt_id]])
        if allowed:
            self.move_attempt(attempt_id, data.draw(st.sampled_from(allowed), label="to"))

    @rule(attempt_id=attempts, to=st.sampled_from(AttemptStatus.values))
    def move_attempt(self, attempt_id: int, to: str) -> None:
        current = self.attempt_status[attempt_id]
        if not attempt_move_allowed(current, to):
            with pytest.raises(IllegalTransition):
                services.transition_attempt(attempt=attempt_id, to=to, actor=ACTOR)
            return
        services.transition_attempt(attempt=attempt_id, to=to, actor=ACTOR)
        self.attempt_moves[attempt_id].append((current, to))
        self.attempt_status[attempt_id] = to

    @rule(attempt_id=attempts)
    def mark_paid(self, attempt_id: int) -> None:
        order_id = self.attempt_order[attempt_id]
        if self.attempt_status[attempt_id] != AttemptStatus.SUCCEEDED:
            with pytest.raises(ValidationFailed):
                services.mark_order_paid(attempt=attempt_id, actor=ACTOR)
        elif not order_move_allowed(self.order_status[order_id], OrderStatus.PAID):
            with pytest.raises(IllegalTransition):
                services.mark_order_paid(attempt=attempt_id, actor=ACTOR)
        else:
            services.mark_order_paid(attempt=attempt_id, actor=ACTOR)
            self._order_moved(order_id, OrderStatus.PAID)
            self.captured[order_id] = self.order_amount[order_id]

    @rule(order_id=orders, data=st.data())
    def advance_order(self, order_id: int, data) -> None:
        # Random targets are mostly refused, and cancel/expire end an order early: this rule
        # takes only forward moves, so orders walk the whole lifecycle (move_order does the rest).
        allowed = sorted(ORDER_TRANSITIONS[self.order_status[order_id]] - {OrderStatus.CANCELLED, OrderStatus.EXPIRED})
        if allowed:
            self.move_order(order_id, data.draw(st.sampled_from(allowed), label="to"))

    @rule(order_id=orders, to=st.sampled_from(OrderStatus.values), overcapture=st.booleans())
    def move_order(self, order_id: int, to: str, overcapture: bool = False) -> None:
        captured = None
        if to == OrderStatus.PAID:
            # Moving to paid directly needs the captured amount: the whole amount, or one
            # minor unit more, which is refused before the move is even considered.
            captured = self.order_amount[order_id]
            if overcapture:
                captured += MINOR_UNIT[self.order_currency[order_id]]
                with pytest.raises(ValidationFailed):
                    services.transition_order(order=order_id, to=to, actor=ACTOR, captured_amount=captured)
                return
        if not order_move_allowed(self.order_status[order_id], to):
            with pytest.raises(IllegalTransition):
                services.transition_order(order=order_id, to=to, actor=ACTOR, captured_amount=captured)
            return
        services.transition_order(order=order_id, to=to, actor=ACTOR, captured_amount=captured)
        self._order_moved(order_id, to)
        if to == OrderStatus.PAID:
            self.captured[order_id] = captured

    @rule(order_id=orders, cause=st.sampled_from([Cause.RESULT_UNKNOWN, Cause.NO_PAYMENT_STARTED]))
    def flag_unreturned(self, order_id: int, cause: str) -> None:
        # The sweep's job, done as the sweep does it: the flag fields only, never status.
        if self.order_status[order_id] in ORDER_TERMINAL or order_id in self.flagged:
            return
        category = Category.NETWORK if cause == Cause.RESULT_UNKNOWN else Category.CUSTOMER
        Order.objects.filter(pk=order_id).update(
            stuck_since=timezone.now() - timedelta(minutes=20), stuck_cause=cause, stuck_category=category
        )
        self.flagged.add(order_id)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def statuses_match_the_model(self) -> None:
        assert dict(Order.objects.filter(pk__in=self.order_status).values_list("pk", "status")) == self.order_status
        assert (
            dict(PaymentAttempt.objects.filter(pk__in=self.attempt_status).values_list("pk", "status"))
            == self.attempt_status
        )

    @invariant()
    def every_status_change_has_exactly_one_event(self) -> None:
        order_events = defaultdict(list)
        for order_id, frm, to in (
            OrderEvent.objects.filter(order_id__in=self.order_status, kind=OrderEvent.Kind.STATUS_CHANGED)
            .order_by("pk")
            .values_list("order_id", "data__from", "data__to")
        ):
            order_events[order_id].append((frm, to))
        assert order_events == {k: v for k, v in self.order_moves.items() if v}

        attempt_events = defaultdict(list)
        for attempt_id, frm, to in (
            OrderEvent.objects.filter(attempt_id__in=self.attempt_status, kind=OrderEvent.Kind.ATTEMPT_STATUS_CHANGED)
            .order_by("pk")
            .values_list("attempt_id", "data__from", "data__to")
        ):
            attempt_events[attempt_id].append((frm, to))
        assert attempt_events == {k: v for k, v in self.attempt_moves.items() if v}

    @invariant()
    def a_terminal_order_leaves_only_by_refund(self) -> None:
        for moves in self.order_moves.values():
            for frm, to in moves:
                assert frm not in ORDER_TERMINAL or to == OrderStatus.REFUNDED, moves

    @invariant()
    def a_final_attempt_never_moves_again(self) -> None:
        for moves in self.attempt_moves.values():
            assert all(frm not in ATTEMPT_FINAL for frm, _ in moves), moves

    @invariant()
    def captured_amount_matches_the_model_and_never_exceeds_the_amount(self) -> None:
        for pk, status, amount, captured in Order.objects.filter(pk__in=self.order_status).values_list(
            "pk", "status", "amount", "captured_amount"
        ):
            assert 0 <= captured <= amount
            assert captured == self.captured[pk]
            assert (captured > 0) == (status in ORDER_CAPTURED)

    @invariant()
    def the_unreturned_flag_matches_the_model(self) -> None:
        rows = Order.objects.filter(pk__in=self.order_status).values_list("pk", "stuck_since", "resolved_at")
        for pk, stuck_since, resolved_at in rows:
            assert (stuck_since is not None) == (pk in self.flagged)
            assert (resolved_at is not None) == (pk in self.resolved)


@pytest.mark.django_db
def test_orders_and_attempts_follow_the_model():
    run_state_machine_as_test(
        OrderLifecycle,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            database=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
