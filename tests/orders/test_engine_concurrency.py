"""The engine under real concurrency on PostgreSQL: re-check workers claim disjoint batches,
and a callback racing a re-check applies the provider's result exactly once.

Every race starts its threads at a barrier; each thread uses (and closes) its own connection.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.causes import Cause
from orders.models import OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.providers.base import ProviderError
from orders.recheck import check_attempts, claim_due_attempts
from orders.states import AttemptStatus, OrderStatus
from orders.webhooks import process_callback

from .engine_helpers import (
    ENGINE_ACTOR,
    Kind,
    flag_order,
    fresh,
    new_order,
    pay_at_sandbox,
    pending_order,
    run_in_threads,
)
from .engine_helpers import sandbox  # noqa: F401 - fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 8


def test_two_workers_claim_disjoint_batches_that_cover_every_due_attempt(on_postgres):
    now = timezone.now()
    due = []
    for _ in range(60):
        _order, attempt = pending_order(amount=Decimal("10.00"))
        PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=now - timedelta(seconds=1))
        due.append(attempt.pk)
    # Not due yet: never claimed.
    _order, later = pending_order()
    PaymentAttempt.objects.filter(pk=later.pk).update(next_check_at=now + timedelta(hours=1))

    first, second = run_in_threads(
        lambda: claim_due_attempts(now=now, limit=40), lambda: claim_due_attempts(now=now, limit=40)
    )

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
    flag_order(order, Cause.RESULT_UNKNOWN)
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


def test_locking_one_order_does_not_hold_up_another_order_of_the_same_merchant(on_postgres):
    first, _attempt = pending_order()
    second, other_attempt = pending_order(merchant=first.merchant)
    holder_has_lock = threading.Event()
    elapsed: list[float] = []

    def holder():
        with transaction.atomic():
            services._lock_order(first.pk)
            holder_has_lock.set()
            time.sleep(2)
        return "ok"

    def other_writer():
        assert holder_has_lock.wait(5)
        started = time.monotonic()
        services.transition_attempt(attempt=other_attempt.pk, to=AttemptStatus.FAILED, actor=ENGINE_ACTOR)
        elapsed.append(time.monotonic() - started)
        return "ok"

    assert run_in_threads(holder, other_writer) == ["ok", "ok"]
    # It did not wait for the 2 s lock on the other order (nor on their shared merchant row).
    assert elapsed[0] < 1.0


@pytest.mark.parametrize("flagged", [False, True], ids=["fresh", "flagged"])
def test_a_callback_and_a_recheck_racing_apply_the_result_once(on_postgres, sandbox, flagged):  # noqa: F811
    server = sandbox(pending_seconds=0)
    cases = []
    for _ in range(ROUNDS):
        order = new_order()
        attempt = pay_at_sandbox(order)
        if flagged:
            flag_order(order, Cause.RESULT_UNKNOWN)
        payment = server.sandbox.snapshot(attempt.provider_reference)
        assert payment["status"] == "succeeded"
        callback = ProviderCallback.objects.create(
            provider="sandbox",
            event_id=f"evt_race_{attempt.pk}",
            headers={"webhook-id": f"evt_race_{attempt.pk}"},
            body=json.dumps({"type": "payment.succeeded", "data": payment}),
            signature_valid=True,
        )
        cases.append((order, attempt, callback))

    asked: dict[int, int] = {}
    for order, attempt, callback in cases:
        outcomes = run_in_threads(
            lambda callback=callback: process_callback(callback),
            lambda attempt=attempt: check_attempts(
                [attempt.pk], source=PaymentCheck.Source.SCHEDULED, actor=Actor.system()
            ),
        )
        assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
        assert outcomes[0] is True, fresh(callback).error
        # The re-check asks the provider unless the callback's result was committed before it
        # loaded the attempt (then the attempt is no longer open and it is skipped).
        asked[attempt.pk] = outcomes[1].checked
        assert outcomes[1].checked + outcomes[1].skipped == 1

    for order, attempt, callback in cases:
        attempt_moves = OrderEvent.objects.filter(attempt=attempt, kind=Kind.ATTEMPT_STATUS_CHANGED)
        assert [(e.data["from"], e.data["to"]) for e in attempt_moves] == [("pending", "succeeded")]
        paid = [e for e in OrderEvent.objects.filter(order=order, kind=Kind.STATUS_CHANGED) if e.data["to"] == "paid"]
        assert len(paid) == 1
        order = fresh(order)
        assert order.status in (OrderStatus.PAID, OrderStatus.CONFIRMED)
        assert order.captured_amount == order.amount
        assert fresh(attempt).status == AttemptStatus.SUCCEEDED
        # Every answer is journaled, whichever applied the result: the callback's, and the
        # re-check's when it asked.
        assert PaymentCheck.objects.filter(attempt=attempt).count() == 1 + asked[attempt.pk]


def test_writer_threads_apply_every_answer_of_a_batch_once(on_postgres, sandbox, settings):  # noqa: F811
    settings.RECHECK_DB_WRITERS = 3
    sandbox(pending_seconds=0)
    attempts = [pay_at_sandbox(new_order()) for _ in range(24)]

    report = check_attempts([a.pk for a in attempts], source=PaymentCheck.Source.SCHEDULED, actor=Actor.system())

    assert (report.claimed, report.checked, report.errors, report.changed) == (24, 24, 0, 24)
    assert sorted(item.attempt_id for item in report.items) == sorted(a.pk for a in attempts)
    for attempt in attempts:
        assert fresh(attempt).status == AttemptStatus.SUCCEEDED
        assert PaymentCheck.objects.filter(attempt=attempt).count() == 1
        paid = [e for e in OrderEvent.objects.filter(order=attempt.order) if e.data.get("to") == "paid"]
        assert len(paid) == 1
