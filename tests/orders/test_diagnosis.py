"""`orders.diagnosis.diagnose` on evidence built by hand: no database.

Each scenario is what the evidence of a real stuck order looks like; together they cover
every cause in `orders.causes.Cause`, and the conflict tests pin the priority order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from orders.causes import Category, Cause
from orders.diagnosis import (
    AttemptEvidence,
    CheckEvidence,
    ConfirmationFailure,
    Diagnosis,
    OrderEvidence,
    diagnose,
    diagnose_many,
)

NOW = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)


@pytest.fixture(autouse=True)
def _utc(settings):
    # Summaries print local times; pin the zone so the expected sentences are stable.
    settings.TIME_ZONE = "UTC"


def check(
    minutes_ago: int,
    *,
    status: str = "pending",
    error: str = "none",
    amount: Decimal | None = None,
    currency: str = "",
    http_status: int | None = None,
    source: str = "scheduled",
) -> CheckEvidence:
    return CheckEvidence(
        source=source,
        reported_status=status if error == "none" else "",
        reported_amount=amount,
        reported_currency=currency,
        error_kind=error,
        http_status=http_status,
        checked_at=NOW - timedelta(minutes=minutes_ago),
    )


def attempt(
    status: str = "pending",
    *,
    id: int = 1,
    reference: str = "sbx_123",
    provider: str = "sandbox",
    checks: tuple[CheckEvidence, ...] = (),
    minutes_ago: int = 55,
    changed_minutes_ago: int | None = None,
    amount: Decimal = Decimal("128.00"),
    currency: str = "CNY",
    **kwargs,
) -> AttemptEvidence:
    return AttemptEvidence(
        id=id,
        provider=provider,
        provider_reference=reference,
        status=status,
        amount=amount,
        currency=currency,
        created_at=NOW - timedelta(minutes=minutes_ago),
        status_changed_at=NOW
        - timedelta(minutes=changed_minutes_ago if changed_minutes_ago is not None else minutes_ago),
        check_count=kwargs.pop("check_count", len(checks)),
        next_check_at=kwargs.pop(
            "next_check_at", NOW + timedelta(minutes=5) if status in {"initiated", "pending", "unknown"} else None
        ),
        recent_checks=checks,
        **kwargs,
    )


def order(
    status: str = "payment_pending",
    *,
    attempts: tuple[AttemptEvidence, ...] = (),
    changed: datetime = HOUR_AGO,
    **kwargs,
) -> OrderEvidence:
    return OrderEvidence(
        order_id=kwargs.pop("order_id", 42),
        reference="ORD-42",
        stuck_after=kwargs.pop("stuck_after", timedelta(minutes=15)),
        status=status,
        status_changed_at=changed,
        submitted_at=kwargs.pop("submitted_at", HOUR_AGO),
        amount=Decimal("128.00"),
        currency="CNY",
        attempts=attempts,
        **kwargs,
    )


def failure(error: str, validation: dict[str, str] | None = None, minutes_ago: int = 5) -> ConfirmationFailure:
    item = ConfirmationFailure(error=error, at=NOW - timedelta(minutes=minutes_ago))
    if validation:
        item["validation"] = validation
    return item


def run(evidence: OrderEvidence, **kwargs) -> Diagnosis:
    result = diagnose(evidence, now=NOW, **kwargs)
    assert result is not None, "expected a diagnosis"
    return result


# --- one realistic scenario per cause ---------------------------------------------------------

SCENARIOS: dict[str, tuple[OrderEvidence, dict, str]] = {
    "submitted, never paid": (order("submitted"), {}, Cause.NO_PAYMENT_STARTED),
    "3-D Secure pending": (
        order(attempts=(attempt("pending", action_required="3ds", checks=(check(3), check(13))),)),
        {},
        Cause.AWAITING_CUSTOMER_ACTION,
    ),
    "card declined": (
        order("payment_failed", attempts=(attempt("failed", failure_code="card_declined"),)),
        {},
        Cause.PAYMENT_DECLINED,
    ),
    "bad phone number": (
        order(
            "paid",
            attempts=(attempt("succeeded"),),
            confirmation_failures=(failure("validation", {"customer_phone": "Enter a valid phone number."}),),
            confirmation_failure_count=1,
        ),
        {},
        Cause.INVALID_CUSTOMER_DATA,
    ),
    "unknown after creation timeout": (
        order(attempts=(attempt("unknown", check_count=0),)),
        {},
        Cause.RESULT_UNKNOWN,
    ),
    "three timeouts": (
        order(
            attempts=(
                attempt(
                    "unknown",
                    checks=(check(15, error="timeout"), check(20, error="timeout"), check(25, error="timeout")),
                ),
            )
        ),
        {},
        Cause.PROVIDER_UNREACHABLE,
    ),
    "provider outage": (
        order(attempts=(attempt("pending", provider="alipay", checks=(check(2, error="connection"),)),)),
        {"outage_providers": frozenset({"alipay"})},
        Cause.PROVIDER_OUTAGE,
    ),
    "callback never came": (
        order(
            attempts=(
                attempt("pending", checks=(check(4, status="succeeded", amount=Decimal("128.00"), currency="CNY"),)),
            )
        ),
        {},
        Cause.CALLBACK_LOST,
    ),
    "provider charged less": (
        order(
            attempts=(
                attempt("pending", checks=(check(4, status="succeeded", amount=Decimal("100.00"), currency="CNY"),)),
            )
        ),
        {},
        Cause.AMOUNT_MISMATCH,
    ),
    "charged twice": (
        order(
            "confirmed",
            attempts=(
                attempt("succeeded", id=2, reference="sbx_2", minutes_ago=50),
                attempt("succeeded", id=1, reference="sbx_1"),
            ),
        ),
        {},
        Cause.DUPLICATE_PAYMENT,
    ),
    "confirmation crashed": (
        order(
            "paid",
            attempts=(attempt("succeeded"),),
            confirmation_failures=(failure("receipt service returned 500"),),
            confirmation_failure_count=3,
        ),
        {},
        Cause.PROCESSING_ERROR,
    ),
    "reported missing by a merchant user": (
        order("paid", attempts=(attempt("succeeded"),), access_reports=2),
        {},
        Cause.NO_ACCESS,
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_scenario_gets_its_cause_and_category(name: str) -> None:
    evidence, kwargs, cause = SCENARIOS[name]
    result = run(evidence, **kwargs)
    assert result.cause == cause
    assert (
        result.category
        == {
            Cause.NO_PAYMENT_STARTED: Category.CUSTOMER,
            Cause.AWAITING_CUSTOMER_ACTION: Category.CUSTOMER,
            Cause.PAYMENT_DECLINED: Category.CUSTOMER,
            Cause.INVALID_CUSTOMER_DATA: Category.CUSTOMER,
            Cause.RESULT_UNKNOWN: Category.NETWORK,
            Cause.PROVIDER_UNREACHABLE: Category.NETWORK,
            Cause.PROVIDER_OUTAGE: Category.PROVIDER,
            Cause.CALLBACK_LOST: Category.PROVIDER,
            Cause.AMOUNT_MISMATCH: Category.PROVIDER,
            Cause.DUPLICATE_PAYMENT: Category.PROVIDER,
            Cause.PROCESSING_ERROR: Category.SYSTEM,
            Cause.NO_ACCESS: Category.PERMISSION,
        }[cause]
    )
    # Plain strings (not lazy proxies) and JSON-ready evidence: both are stored and sent as they are.
    for text in (result.summary, result.recommended_action, result.automatic):
        assert type(text) is str and text
    assert json.loads(json.dumps(result.evidence))["order_id"] == 42


def test_the_scenarios_cover_every_cause() -> None:
    assert {cause for _e, _k, cause in SCENARIOS.values()} == set(Cause.values)


# --- the sentences carry the concrete evidence ---------------------------------------------------


def test_unreachable_summary_names_checks_attempt_provider_and_time() -> None:
    evidence, _kwargs, _cause = SCENARIOS["three timeouts"]
    result = run(evidence)
    assert result.summary == (
        "The last 3 checks of attempt sbx_123 at sandbox failed with: timeout (latest 2026-11-26 10:15)."
    )
    assert result.evidence["failed_checks"] == 3
    assert result.recommended_action == "Watch the provider alert; this order needs nothing yet."
    assert result.automatic == "The payment keeps being re-checked with backoff."
    assert result.needs_review is False


def test_unreachable_lists_each_kind_of_error_once() -> None:
    checks = (
        check(5, error="http_error", http_status=503),
        check(10, error="timeout"),
        check(15, error="http_error", http_status=503),
    )
    result = run(order(attempts=(attempt("pending", checks=checks),)))
    assert result.cause == Cause.PROVIDER_UNREACHABLE
    assert "failed with: HTTP 503, timeout (latest 2026-11-26 10:25)" in result.summary


def test_declined_summary_names_the_decline_code() -> None:
    result = run(SCENARIOS["card declined"][0])
    assert result.summary == "Attempt sbx_123 at sandbox was declined with code “card_declined”."
    assert result.recommended_action == "Offer the customer another payment method."


def test_awaiting_summary_names_the_customer_step() -> None:
    assert "3-D Secure" in run(SCENARIOS["3-D Secure pending"][0]).summary
    plain = run(order(attempts=(attempt("pending", checks=(check(3),)),)))
    assert plain.cause == Cause.AWAITING_CUSTOMER_ACTION
    assert "waiting for the customer" in plain.summary


def test_invalid_data_summary_names_the_fields() -> None:
    result = run(SCENARIOS["bad phone number"][0])
    assert "customer_phone: Enter a valid phone number." in result.summary
    assert result.evidence["validation"] == {"customer_phone": "Enter a valid phone number."}


def test_processing_error_counts_failures_and_quotes_the_latest_error() -> None:
    result = run(SCENARIOS["confirmation crashed"][0])
    assert result.summary == (
        "The order is paid, but its confirmation failed 3 times; latest error: receipt service returned 500."
    )


def test_mismatch_summary_shows_both_amounts_and_needs_review() -> None:
    result = run(SCENARIOS["provider charged less"][0])
    assert "reported 100.00 CNY" in result.summary and "the order is for 128.00 CNY" in result.summary
    assert result.needs_review is True
    assert result.evidence["check"]["reported_amount"] == "100.00"


def test_duplicate_summary_lists_both_payments_and_needs_review() -> None:
    result = run(SCENARIOS["charged twice"][0])
    assert result.summary == "2 payments succeeded for this order: sbx_1 at sandbox, sbx_2 at sandbox."
    assert result.needs_review is True
    assert result.recommended_action == "Refund one of the payments."


# --- who is a candidate -----------------------------------------------------------------------------


def test_not_yet_past_the_threshold_is_not_unreturned() -> None:
    young = order(attempts=(attempt("pending"),), changed=NOW - timedelta(minutes=14))
    assert diagnose(young, now=NOW) is None


def test_the_threshold_is_the_merchants_and_counts_from_the_status_change() -> None:
    evidence = order("submitted", changed=NOW - timedelta(minutes=15), submitted_at=NOW - timedelta(days=1))
    assert run(evidence).cause == Cause.NO_PAYMENT_STARTED
    assert diagnose(replace(evidence, stuck_after=timedelta(minutes=30)), now=NOW) is None


@pytest.mark.parametrize("status", ["confirmed", "cancelled", "expired", "refunded"])
def test_terminal_orders_are_not_unreturned(status: str) -> None:
    evidence = order(
        status,
        attempts=(attempt("succeeded" if status in ("confirmed", "refunded") else "pending"),),
        changed=NOW - timedelta(days=2),
    )
    assert diagnose(evidence, now=NOW) is None


def test_every_open_order_past_its_threshold_gets_a_cause() -> None:
    statuses = ("submitted", "payment_pending", "paid", "payment_failed")
    shapes = (
        (),
        (attempt("initiated"),),
        (attempt("pending"),),
        (attempt("unknown"),),
        (attempt("succeeded"),),
        (attempt("failed"),),
        (attempt("expired"),),
        (attempt("cancelled"),),
    )
    for status in statuses:
        for attempts in shapes:
            assert diagnose(order(status, attempts=attempts), now=NOW) is not None, (status, attempts)


# --- money is flagged whatever the status and age ----------------------------------------------------


def test_duplicate_payment_on_a_confirmed_order() -> None:
    assert run(SCENARIOS["charged twice"][0]).cause == Cause.DUPLICATE_PAYMENT


def test_duplicate_counts_an_unapplied_success_reported_by_the_provider() -> None:
    second = attempt(
        "pending",
        id=2,
        reference="sbx_2",
        minutes_ago=10,
        checks=(check(1, status="succeeded", amount=Decimal("128.00")),),
    )
    evidence = order("paid", attempts=(second, attempt("succeeded", id=1)), changed=NOW - timedelta(minutes=1))
    assert run(evidence).cause == Cause.DUPLICATE_PAYMENT


def test_amount_mismatch_is_flagged_on_a_young_order() -> None:
    evidence = order(
        attempts=(attempt("pending", checks=(check(1, status="pending", amount=Decimal("12.80"), currency="CNY"),)),),
        changed=NOW - timedelta(minutes=2),
    )
    assert run(evidence).cause == Cause.AMOUNT_MISMATCH


def test_currency_mismatch_on_a_succeeded_attempt() -> None:
    evidence = order("payment_pending", attempts=(attempt("succeeded", currency="USD"),))
    result = run(evidence)
    assert result.cause == Cause.AMOUNT_MISMATCH
    assert "reported 128.00 USD" in result.summary


def test_a_failed_payment_with_another_amount_is_not_a_mismatch() -> None:
    checks = (check(5, status="failed", amount=Decimal("1.00")), check(9, status="pending", amount=Decimal("1.00")))
    declined = attempt("failed", failure_code="insufficient_funds", checks=checks)
    assert run(order("payment_failed", attempts=(declined,))).cause == Cause.PAYMENT_DECLINED


def test_a_resolved_duplicate_is_not_raised_again_until_new_money_arrives() -> None:
    evidence, _kwargs, _cause = SCENARIOS["charged twice"]
    reviewed = replace(evidence, money_reviewed_at=NOW - timedelta(minutes=30))
    assert diagnose(reviewed, now=NOW) is None
    third = attempt("succeeded", id=3, reference="sbx_3", minutes_ago=10)
    again = replace(reviewed, attempts=(third, *reviewed.attempts))
    assert run(again).cause == Cause.DUPLICATE_PAYMENT


# --- priority conflicts ----------------------------------------------------------------------------------


def test_duplicate_beats_mismatch() -> None:
    evidence = order(
        "paid",
        attempts=(attempt("succeeded", id=2, amount=Decimal("100.00"), minutes_ago=40), attempt("succeeded", id=1)),
    )
    assert run(evidence).cause == Cause.DUPLICATE_PAYMENT


def test_mismatch_beats_callback_lost() -> None:
    # The same answer is final and uncalled-back, but the money is wrong: never applied automatically.
    assert run(SCENARIOS["provider charged less"][0]).cause == Cause.AMOUNT_MISMATCH


def test_callback_lost_beats_outage_and_a_received_callback_means_not_applied() -> None:
    answer = check(4, status="failed")
    lost = order(attempts=(attempt("pending", provider="alipay", checks=(check(1, error="timeout"), answer)),))
    assert run(lost, outage_providers=frozenset({"alipay"})).cause == Cause.CALLBACK_LOST

    received = order(attempts=(attempt("pending", checks=(answer,), has_callback=True),))
    result = run(received)
    assert result.cause == Cause.PROCESSING_ERROR
    assert result.evidence["reason"] == "result_not_applied"
    assert "signed callback arrived" in result.summary


def test_outage_beats_unreachable_and_unreachable_beats_unknown() -> None:
    timeouts = (check(5, error="timeout"), check(10, error="connection"))
    evidence = order(attempts=(attempt("unknown", checks=timeouts),))
    assert run(evidence, outage_providers=frozenset({"sandbox"})).cause == Cause.PROVIDER_OUTAGE
    assert run(evidence, outage_providers=frozenset({"other"})).cause == Cause.PROVIDER_UNREACHABLE


def test_one_timeout_is_an_unknown_result_not_an_unreachable_provider() -> None:
    evidence = order(attempts=(attempt("pending", checks=(check(5, error="timeout"), check(10))),))
    result = run(evidence)
    assert result.cause == Cause.RESULT_UNKNOWN
    assert result.summary == "The latest check of attempt sbx_123 at sandbox failed with: timeout (2026-11-26 10:25)."


def test_client_errors_do_not_make_a_provider_unreachable() -> None:
    evidence = order(
        attempts=(
            attempt(
                "pending",
                checks=(check(5, error="http_error", http_status=401), check(10, error="http_error", http_status=401)),
            ),
        )
    )
    assert run(evidence).cause == Cause.RESULT_UNKNOWN


def test_initiated_attempt_that_the_provider_never_confirmed() -> None:
    result = run(order(attempts=(attempt("initiated"),)))
    assert result.cause == Cause.RESULT_UNKNOWN
    assert "never confirmed" in result.summary


def test_paid_order_is_about_confirmation_not_a_second_waiting_attempt() -> None:
    waiting = attempt(
        "pending",
        id=2,
        provider="alipay",
        minutes_ago=50,
        checks=(check(1, error="timeout"), check(2, error="timeout")),
    )
    evidence = order("paid", attempts=(waiting, attempt("succeeded", id=1)))
    result = run(evidence, outage_providers=frozenset({"alipay"}))
    assert result.cause == Cause.PROCESSING_ERROR
    assert result.evidence["reason"] == "not_confirmed_in_time"


def test_latest_confirmation_failure_decides_between_data_and_processing() -> None:
    older_crash = failure("timeout talking to the receipt service", minutes_ago=20)
    newer_validation = failure("validation", {"shipping_address": "Address is required."}, minutes_ago=5)
    evidence = order("paid", attempts=(attempt("succeeded"),), confirmation_failures=(older_crash, newer_validation))
    assert run(evidence).cause == Cause.INVALID_CUSTOMER_DATA
    fixed_then_crashed = replace(
        evidence, confirmation_failures=(failure("db locked", minutes_ago=1), newer_validation)
    )
    assert run(fixed_then_crashed).cause == Cause.PROCESSING_ERROR


def test_processing_error_beats_no_access() -> None:
    evidence = replace(SCENARIOS["confirmation crashed"][0], access_reports=4)
    assert run(evidence).cause == Cause.PROCESSING_ERROR


def test_paid_without_any_recorded_failure_is_not_confirmed_in_time() -> None:
    result = run(order("paid", attempts=(attempt("succeeded"),)))
    assert result.cause == Cause.PROCESSING_ERROR
    assert (
        result.summary
        == "The order was paid on 2026-11-26 09:30 and has not been confirmed since; no error was recorded."
    )


def test_success_not_applied_to_an_unpaid_order() -> None:
    result = run(order("payment_pending", attempts=(attempt("succeeded"),)))
    assert result.cause == Cause.PROCESSING_ERROR
    assert result.evidence["reason"] == "success_not_applied"


def test_declined_uses_the_newest_attempt_and_an_open_retry_wins() -> None:
    failed = attempt("failed", id=1, failure_code="card_declined", minutes_ago=50)
    retry = attempt("pending", id=2, reference="sbx_456", minutes_ago=5, checks=(check(1),))
    assert run(order(attempts=(failed, retry))).cause == Cause.AWAITING_CUSTOMER_ACTION
    expired = attempt("expired", id=3, reference="sbx_789", minutes_ago=3)
    result = run(order("payment_pending", attempts=(failed, expired)))
    assert result.cause == Cause.PAYMENT_DECLINED
    assert "sbx_789" in result.summary


def test_attempt_order_given_does_not_matter() -> None:
    older = attempt("failed", id=1, minutes_ago=50)
    newer = attempt("unknown", id=2, reference="sbx_2", minutes_ago=5)
    assert (
        run(order(attempts=(older, newer))).cause == run(order(attempts=(newer, older))).cause == Cause.RESULT_UNKNOWN
    )


# --- an exhausted re-check schedule asks for a person ----------------------------------------------------


def test_exhausted_schedule_needs_review_with_a_decision_to_make() -> None:
    done = attempt("unknown", next_check_at=None, check_count=12)
    result = run(order(attempts=(done,), needs_review=True))
    assert result.cause == Cause.RESULT_UNKNOWN
    assert result.needs_review is True
    assert result.evidence["schedule_exhausted"] is True
    assert "decide with the evidence" in result.recommended_action
    assert result.automatic == "No more checks are scheduled; the order waits for a person."


def test_a_scheduled_check_means_the_schedule_is_not_exhausted() -> None:
    result = run(order(attempts=(attempt("unknown", check_count=12),), needs_review=True))
    assert result.needs_review is False


def test_review_threshold_checks_without_the_flag() -> None:
    done = order(attempts=(attempt("pending", next_check_at=None, check_count=8, checks=(check(2),)),))
    assert run(done).needs_review is False
    assert run(done, review_threshold_checks=8).needs_review is True
    assert run(done, review_threshold_checks=9).needs_review is False


def test_diagnose_many_keys_by_order_id() -> None:
    stuck = order("submitted", order_id=1)
    young = order("submitted", order_id=2, changed=NOW)
    result = diagnose_many({1: stuck, 2: young}, now=NOW)
    assert result[1] is not None and result[1].cause == Cause.NO_PAYMENT_STARTED
    assert result[2] is None
