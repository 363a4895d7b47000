"""POST /webhooks/<provider>/: Standard Webhooks callbacks, signed here with the public
`standardwebhooks` package (not our own signing code), journaled, de-duplicated, applied
once, and never applied when the signature fails."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.management import call_command
from standardwebhooks.webhooks import Webhook

from orders import services
from orders.causes import Cause
from orders.exceptions import Conflict
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.providers.signing import generate_secret
from orders.states import AttemptStatus, OrderStatus
from orders.webhooks import BAD_SIGNATURE_LIMIT, MAX_BODY_BYTES

from .engine_helpers import ENGINE_ACTOR, Kind, events, fresh, new_order, pay_at_sandbox, pending_order
from .engine_helpers import sandbox  # noqa: F401 - fixture
from .factories import MerchantFactory

pytestmark = pytest.mark.django_db

URL = "/webhooks/sandbox/"
Outcome = ProviderCallback.Outcome
_ids = iter(range(1, 10**6))


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    # The bad-signature counter lives in the cache, per minute: start every test at zero.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def secret(settings) -> str:
    return settings.SANDBOX_WEBHOOK_SECRET


def payload(attempt: PaymentAttempt | None = None, status: str = "succeeded", **data) -> str:
    values = {}
    if attempt is not None:
        values = {
            "provider_reference": attempt.provider_reference,
            "order_reference": attempt.order.reference,
            "merchant": attempt.order.merchant.code,
            "amount": format(attempt.amount, "f"),
            "currency": attempt.currency,
        }
    values.update({"status": status, "failure_code": None, "action_required": None}, **data)
    return json.dumps({"type": f"payment.{status}", "timestamp": "2026-01-01T00:00:00Z", "data": values})


def signed_headers(body: str, *, secret: str, msg_id: str | None = None, timestamp: datetime | None = None) -> dict:
    msg_id = msg_id or f"evt_test_{next(_ids):06d}"
    timestamp = timestamp or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body)
    return {
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(timestamp.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }


def deliver(client, body: str, headers: dict, *, url: str = URL):
    return client.post(url, data=body, content_type="application/json", **headers)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    data = response.json()
    assert set(data["error"]) == {"code", "message", "fields"}
    assert data["error"]["code"] == code
    assert data["error"]["message"]
    assert data["error"]["fields"] == {}


# --- accepted -----------------------------------------------------------------------------------


def test_a_signed_success_is_accepted_and_applied(client, secret):
    order, attempt = pending_order()
    body = payload(attempt)

    response = deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_ok_1"))

    assert response.status_code == 200
    assert response.json() == {"status": "processed", "outcome": "applied"}
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    assert fresh(order).status == OrderStatus.PAID
    callback = ProviderCallback.objects.get(provider="sandbox", event_id="evt_ok_1")
    assert callback.signature_valid is True
    assert callback.outcome == Outcome.APPLIED
    assert callback.processed_at is not None
    assert callback.attempt_id == attempt.pk
    assert callback.body == body
    (check,) = PaymentCheck.objects.filter(attempt=attempt)
    assert (check.source, check.reported_status) == (PaymentCheck.Source.CALLBACK, "succeeded")
    paid = [e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "paid"]
    assert paid[0].actor_kind == "provider"


def test_a_signed_decline_fails_the_order(client, secret):
    order, attempt = pending_order()
    body = payload(attempt, "failed", failure_code="card_declined")

    assert deliver(client, body, signed_headers(body, secret=secret)).status_code == 200

    assert fresh(attempt).failure_code == "card_declined"
    assert fresh(order).status == OrderStatus.PAYMENT_FAILED


def test_a_signature_made_with_a_previous_secret_is_accepted_during_rotation(client, settings, secret):
    old = generate_secret()
    providers = {**settings.PAYMENT_PROVIDERS}
    providers["sandbox"] = {**providers["sandbox"], "webhook_secrets": [secret, old]}
    settings.PAYMENT_PROVIDERS = providers
    _order, attempt = pending_order()
    body = payload(attempt)

    response = deliver(client, body, signed_headers(body, secret=old))

    assert response.status_code == 200
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED


def test_one_matching_signature_among_several_is_enough(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    headers = signed_headers(body, secret=secret)
    wrong = Webhook(generate_secret()).sign("x", datetime.now(tz=UTC), body)
    headers["HTTP_WEBHOOK_SIGNATURE"] = f"{wrong} {headers['HTTP_WEBHOOK_SIGNATURE']}"

    assert deliver(client, body, headers).status_code == 200
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED


def test_a_pending_callback_with_a_customer_action_is_no_change_when_repeated_under_a_new_id(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt, "pending", action_required="3ds")
    first = deliver(client, body, signed_headers(body, secret=secret))
    second = deliver(client, body, signed_headers(body, secret=secret))

    assert first.json()["outcome"] == "applied"
    assert second.json()["outcome"] == "no_change"
    assert fresh(attempt).action_required == "3ds"


# --- redelivery ---------------------------------------------------------------------------------


def test_a_redelivery_with_the_same_id_answers_200_and_changes_nothing(client, secret):
    order, attempt = pending_order()
    body = payload(attempt)
    assert deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_again")).status_code == 200
    event_count, check_count = OrderEvent.objects.count(), PaymentCheck.objects.count()

    # Redelivered later: same id and body, fresh timestamp and signature.
    response = deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_again"))

    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert OrderEvent.objects.count() == event_count
    assert PaymentCheck.objects.count() == check_count
    assert ProviderCallback.objects.filter(event_id="evt_again").count() == 1


def test_a_known_id_replayed_with_another_body_changes_nothing_and_keeps_the_genuine_entry(client, secret):
    order, attempt = pending_order()
    body = payload(attempt)
    deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_keep"))
    event_count = OrderEvent.objects.count()
    forged = payload(attempt, "failed")
    headers = signed_headers(forged, secret=generate_secret(), msg_id="evt_keep")

    response = deliver(client, forged, headers)

    assert response.status_code in (200, 400)  # "already done" or "refused": either way nothing happens
    assert OrderEvent.objects.count() == event_count
    callback = ProviderCallback.objects.get(event_id="evt_keep")
    assert (callback.body, callback.signature_valid, callback.outcome) == (body, True, Outcome.APPLIED)
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED


# --- refused signatures: journaled, never applied, a re-check instead -----------------------------


def _forgeries(body: str, secret: str) -> dict[str, tuple[str, dict]]:
    tampered_headers = signed_headers(body, secret=secret)
    return {
        "tampered_body": (body.replace('"succeeded"', '"succeeded" ', 1), tampered_headers),
        "stale_timestamp": (body, signed_headers(body, secret=secret, timestamp=datetime.now(tz=UTC) - timedelta(minutes=10))),
        "future_timestamp": (body, signed_headers(body, secret=secret, timestamp=datetime.now(tz=UTC) + timedelta(minutes=10))),
        "wrong_secret": (body, signed_headers(body, secret=generate_secret())),
    }


FORGERIES = ["tampered_body", "stale_timestamp", "future_timestamp", "wrong_secret"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_callback_whose_signature_fails_is_refused_and_not_applied(client, secret, forgery):
    order, attempt = pending_order()
    body, headers = _forgeries(payload(attempt), secret)[forgery]

    response = deliver(client, body, headers)

    assert_error(response, 400, "invalid_signature")
    assert fresh(attempt).status == AttemptStatus.PENDING
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING
    callback = ProviderCallback.objects.get(event_id=headers["HTTP_WEBHOOK_ID"])
    assert callback.signature_valid is False
    assert callback.error  # the reason, e.g. "stale timestamp"
    assert callback.attempt_id == attempt.pk
    assert callback.outcome == Outcome.RECHECK
    assert callback.body == body


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_refused_callback_triggers_a_recheck_of_the_named_attempt(
    client, secret, sandbox, forgery, django_capture_on_commit_callbacks  # noqa: F811
):
    sandbox(pending_seconds=60)  # the provider itself says: still pending
    order = new_order()
    attempt = pay_at_sandbox(order)
    body, headers = _forgeries(payload(attempt), secret)[forgery]

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, body, headers)

    assert response.status_code == 400
    (check,) = PaymentCheck.objects.filter(attempt=attempt)
    assert (check.source, check.error_kind, check.reported_status) == ("callback", "none", "pending")
    # The forged "succeeded" was only a hint: what the provider said is what counts.
    assert fresh(attempt).status == AttemptStatus.PENDING
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING


def test_a_refused_callback_whose_hint_is_true_gets_applied_through_the_recheck(
    client, secret, sandbox, django_capture_on_commit_callbacks  # noqa: F811
):
    sandbox(pending_seconds=0)
    order = new_order()
    attempt = pay_at_sandbox(order)
    body = payload(attempt)
    headers = signed_headers(body, secret=generate_secret())

    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, body, headers)

    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    assert fresh(order).status in (OrderStatus.PAID, OrderStatus.CONFIRMED)


def test_a_refused_callback_naming_no_known_attempt_is_only_journaled(client, django_capture_on_commit_callbacks):
    body = payload(None, provider_reference="sbx_nobody", order_reference="nope", merchant="nope",
                   amount="1.00", currency="CNY")
    headers = signed_headers(body, secret=generate_secret())

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, body, headers)

    assert_error(response, 400, "invalid_signature")
    callback = ProviderCallback.objects.get(event_id=headers["HTTP_WEBHOOK_ID"])
    assert (callback.outcome, callback.attempt_id) == (Outcome.REJECTED, None)
    assert PaymentAttempt.objects.count() == 0


def test_a_callback_without_signature_headers_is_refused(client):
    _order, attempt = pending_order()
    response = deliver(client, payload(attempt), {})
    assert_error(response, 400, "invalid_signature")
    assert fresh(attempt).status == AttemptStatus.PENDING


def test_a_genuine_delivery_after_a_forged_one_with_the_same_id_is_applied(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    deliver(client, body, signed_headers(body, secret=generate_secret(), msg_id="evt_forged_first"))

    response = deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_forged_first"))

    assert response.status_code == 200
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    callback = ProviderCallback.objects.get(event_id="evt_forged_first")
    assert (callback.signature_valid, callback.outcome) == (True, Outcome.APPLIED)


def test_too_many_bad_signatures_answer_429(client):
    _order, attempt = pending_order()
    body = payload(attempt)
    statuses = [
        deliver(client, body, signed_headers(body, secret=generate_secret())).status_code
        for _ in range(BAD_SIGNATURE_LIMIT + 2)
    ]

    assert statuses[:BAD_SIGNATURE_LIMIT] == [400] * BAD_SIGNATURE_LIMIT
    assert statuses[BAD_SIGNATURE_LIMIT:] == [429, 429]
    response = deliver(client, body, signed_headers(body, secret=generate_secret()))
    assert_error(response, 429, "too_many_invalid_signatures")
    # Still journaled, but no more re-checks are queued for the flood.
    last = ProviderCallback.objects.order_by("-id").first()
    assert (last.signature_valid, last.outcome) == (False, Outcome.REJECTED)


def test_good_callbacks_still_pass_while_bad_signatures_are_limited(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    for _ in range(BAD_SIGNATURE_LIMIT + 1):
        deliver(client, body, signed_headers(body, secret=generate_secret()))

    response = deliver(client, body, signed_headers(body, secret=secret))

    assert response.status_code == 200
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED


# --- limits and routing -------------------------------------------------------------------------


def test_a_body_over_256_kib_is_refused_with_413(client, secret):
    body = json.dumps({"type": "payment.succeeded", "padding": "x" * MAX_BODY_BYTES})

    response = deliver(client, body, signed_headers(body, secret=secret))

    assert_error(response, 413, "body_too_large")
    assert ProviderCallback.objects.count() == 0


def test_a_body_of_exactly_256_kib_is_not_refused_for_its_size(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    body = body[:-1] + ', "padding": "' + "x" * (MAX_BODY_BYTES - len(body) - 15) + '"}'
    assert len(body.encode()) == MAX_BODY_BYTES

    response = deliver(client, body, signed_headers(body, secret=secret))

    assert response.status_code == 200


def test_an_unknown_provider_answers_404(client, secret):
    body = payload(None, provider_reference="x", amount="1.00", currency="CNY")

    response = deliver(client, body, signed_headers(body, secret=secret), url="/webhooks/nosuchpay/")

    assert_error(response, 404, "unknown_provider")
    assert ProviderCallback.objects.count() == 0


def test_only_post_is_allowed(client):
    assert client.get(URL).status_code == 405


# --- the journal --------------------------------------------------------------------------------


def test_headers_are_journaled_with_the_signature_masked(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    headers = signed_headers(body, secret=secret, msg_id="evt_masked")

    deliver(client, body, {**headers, "HTTP_AUTHORIZATION": "Bearer secret-token"})

    stored = ProviderCallback.objects.get(event_id="evt_masked").headers
    assert stored["webhook-signature"] == "***"
    assert stored["authorization"] == "***"
    assert stored["webhook-id"] == "evt_masked"
    assert stored["webhook-timestamp"] == headers["HTTP_WEBHOOK_TIMESTAMP"]
    assert headers["HTTP_WEBHOOK_SIGNATURE"] not in json.dumps(stored)


def test_a_refused_callback_is_journaled_with_the_signature_masked_too(client, secret):
    _order, attempt = pending_order()
    body = payload(attempt)
    headers = signed_headers(body, secret=generate_secret(), msg_id="evt_masked_bad")

    deliver(client, body, headers)

    assert ProviderCallback.objects.get(event_id="evt_masked_bad").headers["webhook-signature"] == "***"


# --- processing failures and replay -------------------------------------------------------------


def _unknown_payment_body(order_reference: str = "LATE-1", merchant: str = "late-shop") -> str:
    return payload(None, provider_reference="sbx_late_1", order_reference=order_reference, merchant=merchant,
                   amount="64.00", currency="CNY")


def test_a_processing_failure_is_answered_500_and_left_unprocessed(client, secret):
    body = _unknown_payment_body()

    response = deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_fails"))

    assert_error(response, 500, "processing_failed")
    callback = ProviderCallback.objects.get(event_id="evt_fails")
    assert callback.signature_valid is True
    assert callback.outcome == Outcome.FAILED
    assert callback.processed_at is None
    assert "sbx_late_1" in callback.error


def _fix_by_creating_the_payment():
    order = new_order(merchant=MerchantFactory(code="late-shop"), reference="LATE-1", amount=Decimal("64.00"))
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", provider_reference="sbx_late_1", status=AttemptStatus.PENDING,
        actor=ENGINE_ACTOR,
    )
    return order, attempt


def test_replay_callbacks_processes_a_failed_callback_once_fixed(client, secret):
    body = _unknown_payment_body(merchant="elsewhere")
    deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_replay"))
    order, attempt = _fix_by_creating_the_payment()

    call_command("replay_callbacks", "--failed", stdout=io.StringIO())

    callback = ProviderCallback.objects.get(event_id="evt_replay")
    assert (callback.outcome, callback.error) == (Outcome.APPLIED, "")
    assert callback.processed_at is not None
    assert callback.attempt_id == attempt.pk
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    assert fresh(order).status == OrderStatus.PAID


def test_replaying_again_finds_nothing_left_to_do(client, secret):
    body = _unknown_payment_body(merchant="elsewhere")
    deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_replay_twice"))
    order, _attempt = _fix_by_creating_the_payment()
    out = io.StringIO()
    call_command("replay_callbacks", "--failed", stdout=out)
    event_count = OrderEvent.objects.count()

    out = io.StringIO()
    call_command("replay_callbacks", "--failed", stdout=out)

    assert "0 replayed" in out.getvalue()
    assert OrderEvent.objects.count() == event_count


def test_replay_of_a_callback_that_still_fails_exits_non_zero(client, secret):
    body = _unknown_payment_body(merchant="elsewhere")
    deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_still_broken"))

    with pytest.raises(SystemExit):
        call_command("replay_callbacks", "--failed", stdout=io.StringIO(), stderr=io.StringIO())
    assert ProviderCallback.objects.get(event_id="evt_still_broken").outcome == Outcome.FAILED


def test_a_redelivery_of_a_callback_whose_processing_failed_processes_it_again(client, secret):
    body = _unknown_payment_body(merchant="elsewhere")
    deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_retry"))
    order, attempt = _fix_by_creating_the_payment()

    # The provider redelivers because we answered 500.
    response = deliver(client, body, signed_headers(body, secret=secret, msg_id="evt_retry"))

    assert response.status_code == 200
    assert fresh(attempt).status == AttemptStatus.SUCCEEDED
    callback = ProviderCallback.objects.get(event_id="evt_retry")
    assert (callback.outcome, callback.processed_at is not None) == (Outcome.APPLIED, True)


# --- payments we did not start ------------------------------------------------------------------


def test_a_twin_success_for_an_unknown_reference_of_a_known_order_is_adopted_and_flagged(client, secret):
    order, original = pending_order()
    first = payload(original)
    deliver(client, first, signed_headers(first, secret=secret))
    twin = payload(original, provider_reference="sbx_twin_of_it")

    response = deliver(client, twin, signed_headers(twin, secret=secret))

    assert response.status_code == 200
    adopted = PaymentAttempt.objects.get(provider="sandbox", provider_reference="sbx_twin_of_it")
    assert adopted.order_id == order.pk
    assert adopted.status == AttemptStatus.SUCCEEDED
    (created,) = [e for e in events(order, Kind.ATTEMPT_CREATED) if e.attempt_id == adopted.pk]
    assert created.data["adopted"] is True
    order = fresh(order)
    assert (order.stuck_cause, order.needs_review) == (Cause.DUPLICATE_PAYMENT, True)
    assert order.status == OrderStatus.PAID
    assert len([e for e in events(order, Kind.STATUS_CHANGED) if e.data["to"] == "paid"]) == 1


def test_a_callback_for_a_payment_whose_create_timed_out_settles_that_attempt(client, secret):
    order = new_order()
    # The create call timed out: we hold an attempt without the provider's reference.
    attempt = services.create_payment_attempt(
        order=order, provider="sandbox", idempotency_key="key-of-the-timed-out-create",
        status=AttemptStatus.UNKNOWN, actor=ENGINE_ACTOR,
    )
    body = payload(attempt, provider_reference="sbx_created_anyway", idempotency_key="key-of-the-timed-out-create")

    response = deliver(client, body, signed_headers(body, secret=secret))

    assert response.status_code == 200
    attempt = fresh(attempt)
    assert (attempt.provider_reference, attempt.status) == ("sbx_created_anyway", AttemptStatus.SUCCEEDED)
    assert order.attempts.count() == 1  # nothing adopted
    order = fresh(order)
    assert order.status == OrderStatus.PAID
    assert order.needs_review is False


def test_a_callback_that_beats_the_checkout_is_recorded_under_the_checkouts_key(client, secret):
    order = new_order()  # still submitted: the checkout's create call has not returned yet
    body = json.dumps({"type": "payment.pending", "data": {
        "provider_reference": "sbx_early", "idempotency_key": "checkout-key", "order_reference": order.reference,
        "merchant": order.merchant.code, "amount": format(order.amount, "f"), "currency": order.currency,
        "status": "pending", "action_required": "3ds",
    }})

    assert deliver(client, body, signed_headers(body, secret=secret)).status_code == 200

    attempt = PaymentAttempt.objects.get(provider_reference="sbx_early")
    assert attempt.idempotency_key == "checkout-key"
    assert (attempt.status, attempt.action_required) == (AttemptStatus.PENDING, "3ds")
    assert fresh(order).status == OrderStatus.PAYMENT_PENDING
    # The checkout then tries to record the attempt it started: it is already there.
    with pytest.raises(Conflict):
        services.create_payment_attempt(
            order=order, provider="sandbox", idempotency_key="checkout-key", status=AttemptStatus.UNKNOWN,
            actor=ENGINE_ACTOR,
        )
    success = payload(attempt, idempotency_key="checkout-key")
    deliver(client, success, signed_headers(success, secret=secret))
    assert fresh(order).status == OrderStatus.PAID
    assert fresh(order).needs_review is False
    assert order.attempts.count() == 1


def test_a_success_reported_for_a_submitted_order_pays_it(client, secret):
    order = new_order()
    body = payload(None, provider_reference="sbx_outside", order_reference=order.reference,
                   merchant=order.merchant.code, amount=format(order.amount, "f"), currency=order.currency)

    assert deliver(client, body, signed_headers(body, secret=secret)).status_code == 200

    order = fresh(order)
    assert order.status == OrderStatus.PAID
    assert order.needs_review is False


def test_a_callback_for_an_order_of_another_merchant_is_not_adopted(client, secret):
    order, original = pending_order()
    body = payload(original, provider_reference="sbx_stranger", merchant="someone-else")

    response = deliver(client, body, signed_headers(body, secret=secret))

    assert response.status_code == 500
    assert not PaymentAttempt.objects.filter(provider_reference="sbx_stranger").exists()
    assert Order.objects.get(pk=order.pk).needs_review is False
