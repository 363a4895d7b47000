"""Callbacks from the sandbox to a receiver on loopback: signed, redelivered, lost or
duplicated on purpose; and the adapter's parsing of what arrives."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from orders.providers import signing
from orders.providers.base import MalformedCallback, SignatureInvalid

from .conftest import OLD_SECRET, SECRET, wait_until
from .test_http_adapter import create


def test_final_outcome_sends_a_signed_callback(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, webhook_url=receiver.url)
    provider = make_provider(sandbox.url)
    created = create(provider)

    (callback,) = receiver.wait_for(1)
    signing.verify([SECRET], callback.headers, callback.body)
    provider.verify_callback(callback.headers, callback.body)
    event = provider.parse_callback(callback.headers, callback.body)

    assert event.event_type == "payment.succeeded"
    assert event.event_id == callback.headers["webhook-id"]
    assert event.event_id.startswith("evt_")
    assert event.sent_at is not None and abs((datetime.now(UTC) - event.sent_at).total_seconds()) < 5
    assert event.result.status == "succeeded"
    assert event.result.provider_reference == created.provider_reference
    assert event.result.order_reference == "ORD-1001"
    assert event.result.merchant == "acme"
    assert event.result.amount == Decimal("12.34")


def test_decline_callback(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, decline_rate=1, webhook_url=receiver.url)
    provider = make_provider(sandbox.url)
    create(provider)
    (callback,) = receiver.wait_for(1)
    event = provider.parse_callback(callback.headers, callback.body)
    assert (event.event_type, event.result.status) == ("payment.failed", "failed")
    assert event.result.failure_code


def test_action_required_sends_a_pending_callback_first(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0.3, action_required_rate=1, webhook_url=receiver.url)
    provider = make_provider(sandbox.url)
    create(provider)
    first, second = receiver.wait_for(2)
    pending = provider.parse_callback(first.headers, first.body)
    final = provider.parse_callback(second.headers, second.body)
    assert (pending.result.status, pending.result.action_required) == ("pending", "3ds")
    assert (final.result.status, final.result.action_required) == ("succeeded", "")
    assert pending.event_id != final.event_id


def test_lost_callbacks_are_never_sent(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, lost_callback_rate=1, webhook_url=receiver.url)
    provider = make_provider(sandbox.url)
    references = [create(provider, f"att-{n}").provider_reference for n in range(3)]

    wait_until(lambda: sandbox.sandbox.control()["stats"]["callbacks_suppressed"] == 3)
    time.sleep(0.2)  # give a wrongly queued delivery the chance to show up
    assert receiver.received == []
    # The outcome is there all the same: only a re-check finds it.
    assert {provider.query(ref).status for ref in references} == {"succeeded"}


def test_duplicate_success_emits_a_twin_callback(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, duplicate_success_rate=1, webhook_url=receiver.url)
    provider = make_provider(sandbox.url)
    created = create(provider)

    callbacks = receiver.wait_for(2)
    events = [provider.parse_callback(c.headers, c.body) for c in callbacks]
    references = {event.result.provider_reference for event in events}
    assert len(references) == 2 and created.provider_reference in references
    assert {event.event_type for event in events} == {"payment.succeeded"}
    assert {event.result.order_reference for event in events} == {"ORD-1001"}

    (twin,) = references - {created.provider_reference}
    result = provider.query(twin)
    assert (result.status, result.order_reference, result.amount) == ("succeeded", "ORD-1001", Decimal("12.34"))


def test_failed_delivery_is_redelivered_with_the_same_id(start_sandbox, make_provider, receiver) -> None:
    receiver.fail_first = 2
    sandbox = start_sandbox(pending_seconds=0, webhook_url=receiver.url, callback_retry_ms=30)
    create(make_provider(sandbox.url))

    attempts = receiver.wait_for(3)
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        signing.verify([SECRET], attempt.headers, attempt.body)
    wait_until(lambda: sandbox.sandbox.control()["stats"]["callbacks_delivered"] == 1)
    assert sandbox.sandbox.control()["stats"]["callback_attempts_failed"] == 2


def test_delivery_gives_up_after_the_attempt_limit(start_sandbox, make_provider, receiver) -> None:
    receiver.fail_first = 100
    sandbox = start_sandbox(pending_seconds=0, webhook_url=receiver.url, callback_retry_ms=10, callback_attempts=3)
    create(make_provider(sandbox.url))
    wait_until(lambda: sandbox.sandbox.control()["stats"]["callbacks_given_up"] == 1)
    assert len(receiver.received) == 3


def test_callback_delay(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, callback_delay_ms=300, webhook_url=receiver.url)
    create(make_provider(sandbox.url))
    time.sleep(0.15)
    assert receiver.received == []
    receiver.wait_for(1)


def test_sandbox_signs_with_every_secret_while_rotating(start_sandbox, make_provider, receiver) -> None:
    sandbox = start_sandbox(pending_seconds=0, webhook_url=receiver.url, webhook_secrets=[SECRET, OLD_SECRET])
    create(make_provider(sandbox.url))
    (callback,) = receiver.wait_for(1)
    assert len(callback.headers["webhook-signature"].split()) == 2
    make_provider(sandbox.url, webhook_secrets=[OLD_SECRET]).verify_callback(callback.headers, callback.body)


def test_verify_callback_refuses_a_forgery(make_provider) -> None:
    provider = make_provider("http://127.0.0.1:1")
    body = json.dumps({"type": "payment.succeeded", "data": {}}).encode()
    headers = signing.sign_headers(OLD_SECRET, "evt_forged", body)
    with pytest.raises(SignatureInvalid) as caught:
        provider.verify_callback(headers, body)
    assert caught.value.reason == signing.NO_MATCHING_SIGNATURE


# --- parse_callback on bodies the sandbox never sends -----------------------------------------

DATA = {
    "provider_reference": "sbx_1",
    "order_reference": "ORD-1",
    "merchant": "acme",
    "amount": "12.34",
    "currency": "CNY",
    "failure_code": None,
}
HEADERS = {"webhook-id": "evt_1", "webhook-timestamp": "1760000000", "webhook-signature": "v1,x"}


def parse(make_provider, payload: object, headers: dict[str, str] = HEADERS):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return make_provider("http://127.0.0.1:1").parse_callback(headers, body)


def test_parse_the_documented_payload(make_provider) -> None:
    event = parse(make_provider, {"type": "payment.failed", "data": DATA | {"failure_code": "card_declined"}})
    assert event.event_id == "evt_1"
    assert event.sent_at == datetime.fromtimestamp(1_760_000_000, tz=UTC)
    assert event.result.status == "failed"
    assert event.result.failure_code == "card_declined"
    assert event.result.raw["data"]["merchant"] == "acme"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        [1, 2],
        {"type": "payment.teleported", "data": DATA},
        {"data": DATA},
        {"type": "payment.succeeded"},
        {"type": "payment.succeeded", "data": "sbx_1"},
        {"type": "payment.succeeded", "data": {k: v for k, v in DATA.items() if k != "provider_reference"}},
        {"type": "payment.succeeded", "data": DATA | {"amount": None}},
        {"type": "payment.succeeded", "data": DATA | {"currency": 156}},
        {"type": "payment.succeeded", "data": DATA | {"failure_code": 3}},
    ],
)
def test_bad_callbacks_are_malformed(make_provider, payload: object) -> None:
    with pytest.raises(MalformedCallback):
        parse(make_provider, payload)


def test_callback_without_event_id_is_malformed(make_provider) -> None:
    with pytest.raises(MalformedCallback):
        parse(make_provider, {"type": "payment.succeeded", "data": DATA}, {"webhook-timestamp": "1760000000"})


def test_unparseable_timestamp_leaves_sent_at_empty(make_provider) -> None:
    event = parse(make_provider, {"type": "payment.succeeded", "data": DATA}, HEADERS | {"webhook-timestamp": "soon"})
    assert event.sent_at is None
