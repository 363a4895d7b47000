"""The engine under real concurrency on PostgreSQL: re-check workers claim disjoint batches,
and a callback racing a re-check applies the provider's result exactly once.

Every race starts its threads at a barrier; each thread uses (and closes) its own connection.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.causes import Cause
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.providers.base import ProviderError
from orders.recheck import check_attempts, claim_due_attempts
from orders.states import AttemptStatus, OrderStatus
from orders.webhooks import process_callback

from .engine_helpers import ENGINE_ACTOR, Kind, fresh, pay_at_sandbox, pending_order, run_in_threads, new_order
from .engine_helpers import sandbox  # noqa: F401 - fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 8


def _flag(order: Order, cause: str = Cause.RESULT_UNKNOWN) -> None:
    with transaction.atomic():
        services._flag_locked(
            services._lock_order(order.pk), cause=cause, needs_review=False, actor=ENGINE_ACTOR, message="test"
        )


def test_two_workers_claim_disjoint_batches_that_cover_every_due_attempt(on_postgres):
    now = timezone.now()
    due = []
    for _ in range(60):
        _order, attempt = pending_order(amount=Decimal("10.00"))
        PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=now - timezone.timedelta(seconds=1))
        due.append(attempt.pk)
    # Not due yet: never claimed.
    _order, later = pending_order()
    PaymentAttempt.objects.filter(pk=later.pk).update(next_check_at=now + timezone.timedelta(hours=1))

    first, second = run_in_threads(lambda: claim_due_attempts(now=now, limit=40), lambda: claim_due_attempts(now=now, limit=40))

    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(due)
    assert {len(first), len(second)} == {40, 20}


def test_many_workers_never_claim_an_attempt_twice(on_postgres):
    now = timezone.now()
    due = set()
    for _ in range(50):
        _order, attempt = pending_order(amount=Decimal("10.00"))
        PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=now)
        due.add(attempt.pk)

    batches = run_in_threads(*[lambda: claim_due_attempts(now=now, limit=7) for _ in range(5)])

    claimed = [pk for batch in batches for pk in batch]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= due
    assert len(claimed) == 35


def test_record_check_queues_behind_a_writer_that_locks_the_order_first(on_postgres):
    """Every writer locks the order, then the attempt. A check of a flagged order writes the
    order too; if it took the attempt first, the two would deadlock."""
    order, attempt = pending_order()
    _flag(order)
    writer_has_order = threading.Event()

    def writer():
        with transaction.atomic():
            services._lock_order(order.pk)
            writer_has_order.set()
            time.sleep(0.5)  # let the check take whatever lock it takes first
            PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        return "ok"

    def checker():
        assert writer_has_order.wait(5)
        services.record_check(
            attempt=attempt.pk, source=PaymentCheck.Source.SCHEDULED, error=ProviderError("timeout", "slow")
        )
        return "ok"

    outcomes = run_in_threads(writer, checker)

    assert outcomes == ["ok", "ok"], outcomes
    assert PaymentCheck.objects.filter(attempt=attempt).count() == 1


@pytest.mark.parametrize("flagged", [False, True], ids=["fresh", "flagged"])
def test_a_callback_and_a_recheck_racing_apply_the_result_once(on_postgres, sandbox, flagged):  # noqa: F811
    server = sandbox(pending_seconds=0)
    cases = []
    for _ in range(ROUNDS):
        order = new_order()
        attempt = pay_at_sandbox(order)
        if flagged:
            _flag(order)
        payment = server.sandbox.snapshot(attempt.provider_reference)
        assert payment["status"] == "succeeded"
        callback = ProviderCallback.objects.create(
            provider="sandbox",
            event_id=f"evt_race_{attempt.pk}",
            headers={"webhook-id": f"evt_race_{attempt.pk}"},
            body='{"type": "payment.succeeded", "data": %s}' % __import__("json").dumps(payment),
            signature_valid=True,
        )
        cases.append((order, attempt, callback))

    for order, attempt, callback in cases:
        outcomes = run_in_threads(
            lambda callback=callback: process_callback(callback),
            lambda attempt=attempt: check_attempts(
                [attempt.pk], source=PaymentCheck.Source.SCHEDULED, actor=Actor.system()
            ),
        )
        assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
        assert outcomes[0] is True, fresh(callback).error

    for order, attempt, callback in cases:
        attempt_moves = OrderEvent.objects.filter(attempt=attempt, kind=Kind.ATTEMPT_STATUS_CHANGED)
        assert [(e.data["from"], e.data["to"]) for e in attempt_moves] == [("pending", "succeeded")]
        paid = [e for e in OrderEvent.objects.filter(order=order, kind=Kind.STATUS_CHANGED) if e.data["to"] == "paid"]
        assert len(paid) == 1
        order = fresh(order)
        assert order.status in (OrderStatus.PAID, OrderStatus.CONFIRMED)
        assert order.captured_amount == order.amount
        assert fresh(attempt).status == AttemptStatus.SUCCEEDED
        # Both answers are journaled, whichever applied the result.
        assert PaymentCheck.objects.filter(attempt=attempt).count() == 2
