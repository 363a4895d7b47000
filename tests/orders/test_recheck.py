"""Scheduled and manual re-checks over real HTTP against the sandbox provider on loopback.

Every fault the sandbox can produce must end as a journaled check and a rescheduled attempt,
never as a crash of the batch."""

from __future__ import annotations

import copy
import socket
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.causes import Cause
from orders.models import PaymentAttempt, PaymentCheck
from orders.providers.registry import clear_cache, get_provider
from orders.recheck import CLAIM_LEASE, check_attempts, check_order_now, claim_due_attempts, recheck_due
from orders.states import AttemptStatus, OrderStatus

from .engine_helpers import ENGINE_ACTOR, Kind, events, fresh, new_order, pay_at_sandbox, short_policy
from .engine_helpers import sandbox  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

SCHEDULED = PaymentCheck.Source.SCHEDULED


def checks_of(attempt: PaymentAttempt) -> list[PaymentCheck]:
    return list(PaymentCheck.objects.filter(attempt=attempt).order_by("checked_at", "id"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- recheck_due --------------------------------------------------------------------------------


def test_recheck_due_claims_due_attempts_and_applies_their_results(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    attempts = [pay_at_sandbox(new_order()) for _ in range(3)]

    report = recheck_due()

    assert (report.claimed, report.checked, report.errors, report.changed) == (3, 3, 0, 3)
    for attempt in attempts:
        attempt = fresh(attempt)
        assert attempt.status == AttemptStatus.SUCCEEDED
        assert attempt.next_check_at is None
        assert fresh(attempt.order).status == OrderStatus.PAID
        (check,) = checks_of(attempt)
        assert (check.source, check.error_kind, check.reported_status) == (SCHEDULED, "none", "succeeded")
        assert check.http_status == 200


def test_a_result_found_by_the_recheck_is_recorded_as_a_lost_callback(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    attempt = pay_at_sandbox(new_order())

    recheck_due()

    (applied,) = events(attempt.order, Kind.RESULT_APPLIED)
    assert applied.data["reconciled"] is True
    assert applied.data["cause"] == Cause.CALLBACK_LOST


def test_a_pending_payment_is_rescheduled_on_the_pending_delays(sandbox):  # noqa: F811
    sandbox(pending_seconds=60)
    short_policy(pending=[500, 700, 900], unknown=[5, 5, 5])
    attempt = pay_at_sandbox(new_order())
    before = timezone.now()

    recheck_due()

    attempt = fresh(attempt)
    assert attempt.status == AttemptStatus.PENDING
    assert attempt.check_count == 1
    assert before + timedelta(seconds=700) <= attempt.next_check_at <= timezone.now() + timedelta(seconds=700)


def test_attempts_not_yet_due_are_left_alone(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    later = timezone.now() + timedelta(minutes=5)
    attempt = pay_at_sandbox(new_order(), now=later)

    report = recheck_due()

    assert report.claimed == 0
    assert fresh(attempt).next_check_at == later
    assert checks_of(attempt) == []


def test_a_run_with_a_clock_ahead_checks_each_due_attempt_once(sandbox):  # noqa: F811
    sandbox(pending_seconds=600)
    order = new_order()
    attempt = pay_at_sandbox(order)
    ahead = timezone.now() + timedelta(hours=1)

    report = recheck_due(now=ahead, time_budget=10)

    assert (report.claimed, report.checked) == (1, 1)
    attempt = fresh(attempt)
    assert attempt.check_count == 1
    assert attempt.next_check_at > ahead
    assert fresh(order).needs_review is False
    (check,) = checks_of(attempt)
    assert check.checked_at == ahead


def test_a_declined_payment_fails_the_order(sandbox):  # noqa: F811
    sandbox(pending_seconds=0, decline_rate=1)
    attempt = pay_at_sandbox(new_order())

    recheck_due()

    attempt = fresh(attempt)
    assert attempt.status == AttemptStatus.FAILED
    assert attempt.failure_code
    assert fresh(attempt.order).status == OrderStatus.PAYMENT_FAILED


# --- faults -------------------------------------------------------------------------------------


def _fault_then_recheck(server, attempt, **knobs):
    server.set_knobs(**knobs)
    report = recheck_due()
    assert report.claimed == 1 and report.checked == 1
    return report


def test_a_timeout_is_recorded_and_the_attempt_rescheduled(sandbox):  # noqa: F811
    server = sandbox(pending_seconds=0, hang_seconds=2, read_timeout=0.2)
    attempt = pay_at_sandbox(new_order())

    report = _fault_then_recheck(server, attempt, timeout_rate=1)

    assert report.errors == 1
    (check,) = checks_of(attempt)
    assert check.error_kind == "timeout"
    assert check.latency_ms >= 150
    attempt = fresh(attempt)
    assert attempt.status == AttemptStatus.PENDING
    assert attempt.next_check_at > timezone.now()
    assert attempt.last_error_code == "timeout"


def test_a_refused_connection_is_recorded(sandbox, settings):  # noqa: F811
    sandbox(pending_seconds=0)
    attempt = pay_at_sandbox(new_order())
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["sandbox"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    settings.PAYMENT_PROVIDERS = providers
    clear_cache()

    report = recheck_due()

    assert report.errors == 1
    (check,) = checks_of(attempt)
    assert check.error_kind == "connection"
    assert fresh(attempt).status == AttemptStatus.PENDING


def test_a_server_error_is_recorded_with_its_http_status(sandbox):  # noqa: F811
    server = sandbox(pending_seconds=0)
    attempt = pay_at_sandbox(new_order())

    _fault_then_recheck(server, attempt, error_rate=1)

    (check,) = checks_of(attempt)
    assert check.error_kind == "http_error"
    assert check.http_status in (500, 503)
    assert "simulated failure" in check.response_excerpt


def test_a_malformed_answer_is_recorded(sandbox):  # noqa: F811
    server = sandbox(pending_seconds=0)
    attempt = pay_at_sandbox(new_order())

    _fault_then_recheck(server, attempt, malformed_rate=1)

    (check,) = checks_of(attempt)
    assert check.error_kind == "malformed"
    assert check.http_status == 200
    assert fresh(attempt).status == AttemptStatus.PENDING


def test_an_unknown_reference_is_recorded_as_not_found(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    order = new_order()
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", provider_reference="sbx_never_created", status=AttemptStatus.PENDING,
        next_check_at=timezone.now(), actor=ENGINE_ACTOR,
    )

    report = recheck_due()

    assert report.errors == 1
    (check,) = checks_of(attempt)
    assert (check.error_kind, check.http_status) == ("not_found", 404)
    assert fresh(attempt).status == AttemptStatus.PENDING
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


def test_an_amount_mismatch_is_recorded_and_held_for_review(sandbox):  # noqa: F811
    sandbox(pending_seconds=0, amount_mismatch_rate=1)
    order = new_order(amount=Decimal("50.00"))
    attempt = pay_at_sandbox(order)

    report = recheck_due()

    assert report.checked == 1
    (check,) = checks_of(attempt)
    assert (check.reported_status, check.reported_amount) == ("succeeded", Decimal("51.00"))
    order = fresh(order)
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert (order.stuck_cause, order.needs_review) == (Cause.AMOUNT_MISMATCH, True)
    assert order.captured_amount == Decimal("0")


def test_a_provider_side_duplicate_charge_pays_the_order_once(sandbox):  # noqa: F811
    # The twin has its own reference; only its callback can tell us about it.
    sandbox(pending_seconds=0, duplicate_success_rate=1)
    order = new_order()
    attempt = pay_at_sandbox(order)

    recheck_due()

    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    assert fresh(order).status == OrderStatus.PAID
    assert len([e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "paid"]) == 1


def test_two_payments_of_one_order_found_by_rechecks_are_flagged_as_duplicate(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    order = new_order()
    pay_at_sandbox(order, key="first-press")
    pay_at_sandbox(order, key="second-press")

    report = recheck_due()

    assert report.checked == 2
    order = fresh(order)
    assert order.attempts.filter(status=AttemptStatus.SUCCEEDED).count() == 2
    assert order.status == OrderStatus.PAID
    assert (order.stuck_cause, order.needs_review) == (Cause.DUPLICATE_PAYMENT, True)


def test_one_batch_survives_every_fault_at_once(sandbox, settings):  # noqa: F811
    server = sandbox(pending_seconds=0)
    good = [pay_at_sandbox(new_order()) for _ in range(3)]
    lost = services.create_payment_attempt(
        order=new_order(), provider="sandbox", provider_reference="sbx_lost", status=AttemptStatus.PENDING,
        next_check_at=timezone.now(), actor=ENGINE_ACTOR,
    )
    server.set_knobs(error_rate=0.5, malformed_rate=0.3, seed=3)

    report = recheck_due()

    assert report.claimed == 4
    assert report.checked == 4
    assert PaymentCheck.objects.filter(attempt__in=[*good, lost]).count() == 4
    assert checks_of(lost)[0].error_kind in ("not_found", "http_error", "malformed")


# --- claiming -----------------------------------------------------------------------------------


def test_claiming_pushes_next_check_at_forward_by_the_lease():
    now = timezone.now()
    order = new_order()
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", provider_reference="sbx_claim", status=AttemptStatus.PENDING,
        next_check_at=now - timedelta(seconds=5), actor=ENGINE_ACTOR,
    )

    assert claim_due_attempts(now=now) == [attempt.pk]
    assert fresh(attempt).next_check_at == now + CLAIM_LEASE
    # Claimed attempts are not handed out again while the lease runs...
    assert claim_due_attempts(now=now + CLAIM_LEASE - timedelta(seconds=1)) == []
    # ...but come due again when it ends (a worker that died mid-batch).
    assert claim_due_attempts(now=now + CLAIM_LEASE) == [attempt.pk]


def test_claiming_takes_the_longest_waiting_first_up_to_the_limit():
    now = timezone.now()
    attempts = []
    for seconds in (30, 10, 20):
        attempts.append(
            services.create_payment_attempt(
                order=new_order(), provider="sandbox", provider_reference=f"sbx_age_{seconds}",
                status=AttemptStatus.PENDING, next_check_at=now - timedelta(seconds=seconds), actor=ENGINE_ACTOR,
            )
        )

    assert claim_due_attempts(now=now, limit=2) == [attempts[0].pk, attempts[2].pk]


def test_attempts_of_an_unconfigured_provider_are_unscheduled_and_skipped():
    order = new_order()
    attempt = services.create_payment_attempt(
        order=order, provider="ghostpay", provider_reference="gp_1", status=AttemptStatus.PENDING,
        next_check_at=timezone.now(), actor=ENGINE_ACTOR,
    )

    report = recheck_due()

    assert (report.claimed, report.checked, report.skipped) == (1, 0, 1)
    assert fresh(attempt).next_check_at is None
    assert checks_of(attempt) == []
    # Nothing is left due, so the next run claims nothing.
    assert recheck_due().claimed == 0


def test_attempts_that_became_final_after_the_claim_are_skipped(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    attempt = pay_at_sandbox(new_order())
    ids = claim_due_attempts()
    services.transition_attempt(attempt=attempt, to=AttemptStatus.FAILED, actor=ENGINE_ACTOR)

    report = check_attempts(ids, source=SCHEDULED, actor=Actor.system())

    assert (report.checked, report.skipped) == (0, 1)
    assert checks_of(attempt) == []


# --- attempts without a provider reference ---------------------------------------------------------


def test_an_attempt_whose_create_answer_was_lost_learns_its_reference_by_creating_again(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    order = new_order()
    # The create reached the provider but its answer never reached us.
    created = get_provider("sandbox").create_payment(
        idempotency_key="lost-answer", amount=order.amount, currency=order.currency,
        order_reference=order.reference, merchant=order.merchant.code,
    )
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", idempotency_key="lost-answer", status=AttemptStatus.UNKNOWN,
        next_check_at=timezone.now(), actor=ENGINE_ACTOR,
    )

    recheck_due()

    attempt = fresh(attempt)
    assert attempt.provider_reference == created.provider_reference
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert fresh(order).status == OrderStatus.PAID


# --- check now ----------------------------------------------------------------------------------


def test_check_order_now_asks_about_every_open_attempt_of_that_order_only(sandbox):  # noqa: F811
    sandbox(pending_seconds=60)
    order = new_order()
    first = pay_at_sandbox(order, key="now-1", now=timezone.now() + timedelta(hours=1))
    second = pay_at_sandbox(order, key="now-2", now=timezone.now() + timedelta(hours=1))
    other = pay_at_sandbox(new_order(), key="now-other")
    staff = Actor.system("staff stand-in")

    report = check_order_now(order.pk, actor=staff)

    assert report.checked == 2
    for attempt in (first, second):
        (check,) = checks_of(attempt)
        assert check.source == PaymentCheck.Source.MANUAL
        assert check.reported_status == "pending"
    assert checks_of(other) == []


def test_check_order_now_applies_a_final_result(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    order = new_order()
    pay_at_sandbox(order, now=timezone.now() + timedelta(hours=1))

    report = check_order_now(order.pk, actor=Actor.system("staff"))

    assert report.changed == 1
    assert fresh(order).status == OrderStatus.PAID


def test_check_order_now_on_an_order_without_open_attempts_does_nothing(sandbox):  # noqa: F811
    sandbox(pending_seconds=0)
    order = new_order()

    report = check_order_now(order.pk, actor=Actor.system("staff"))

    assert (report.claimed, report.checked) == (0, 0)
