"""Standard Webhooks signing: interoperable with the reference `standardwebhooks` package,
strict about time, tolerant of secret rotation."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from orders.providers import signing
from orders.providers.base import SignatureInvalid

from .conftest import OLD_SECRET, OTHER_SECRET, SECRET

BODY = b'{"type":"payment.succeeded","data":{"provider_reference":"sbx_1","amount":"12.34"}}'
NOW = 1_760_000_000


def reference_headers(
    secret: str, *, msg_id: str = "msg_1", timestamp: int = NOW, body: bytes = BODY
) -> dict[str, str]:
    """Headers exactly as the public standardwebhooks package signs them."""
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def reasons(headers: dict[str, str], *, secrets: list[str] | None = None, body: bytes = BODY, now: int = NOW) -> str:
    with pytest.raises(SignatureInvalid) as caught:
        signing.verify(secrets or [SECRET], headers, body, now=now)
    return caught.value.reason


def test_reference_signature_is_accepted() -> None:
    signing.verify([SECRET], reference_headers(SECRET), BODY, now=NOW)


def test_our_signature_is_accepted_by_the_reference_package() -> None:
    headers = signing.sign_headers(SECRET, "msg_2", BODY, timestamp=time.time())
    # The reference implementation checks against the real clock, hence a real timestamp.
    Webhook(SECRET).verify(BODY.decode(), headers)


def test_sign_matches_the_reference_package() -> None:
    expected = reference_headers(SECRET)["webhook-signature"]
    assert signing.sign(SECRET, "msg_1", NOW, BODY) == expected


def test_tampered_body_is_refused() -> None:
    assert reasons(reference_headers(SECRET), body=BODY.replace(b"12.34", b"99.34")) == signing.NO_MATCHING_SIGNATURE


def test_tampered_id_is_refused() -> None:
    headers = reference_headers(SECRET) | {"webhook-id": "msg_other"}
    assert reasons(headers) == signing.NO_MATCHING_SIGNATURE


def test_wrong_secret_is_refused() -> None:
    assert reasons(reference_headers(OTHER_SECRET)) == signing.NO_MATCHING_SIGNATURE


def test_stale_timestamp_is_refused_even_with_a_valid_signature() -> None:
    headers = reference_headers(SECRET, timestamp=NOW - 301)
    assert reasons(headers) == signing.STALE_TIMESTAMP


def test_future_timestamp_beyond_tolerance_is_refused() -> None:
    headers = reference_headers(SECRET, timestamp=NOW + 301)
    assert reasons(headers) == signing.FUTURE_TIMESTAMP


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamps_at_the_tolerance_edge_are_accepted(offset: int) -> None:
    signing.verify([SECRET], reference_headers(SECRET, timestamp=NOW + offset), BODY, now=NOW)


def test_now_may_be_a_datetime() -> None:
    signing.verify([SECRET], reference_headers(SECRET), BODY, now=datetime.fromtimestamp(NOW + 10, tz=UTC))


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(missing: str) -> None:
    headers = reference_headers(SECRET)
    del headers[missing]
    assert reasons(headers) == signing.MISSING_HEADER


def test_header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in reference_headers(SECRET).items()}
    assert "Webhook-Signature" in headers
    signing.verify([SECRET], headers, BODY, now=NOW)


def test_non_numeric_timestamp_is_refused() -> None:
    headers = reference_headers(SECRET) | {"webhook-timestamp": "2025-01-01T00:00:00Z"}
    assert reasons(headers) == signing.INVALID_TIMESTAMP


def test_rotation_several_signatures_any_match() -> None:
    # The provider signs with its new and its old secret while rotating.
    new = signing.sign(SECRET, "msg_1", NOW, BODY)
    old = signing.sign(OLD_SECRET, "msg_1", NOW, BODY)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": f"{old} {new}"}
    signing.verify([SECRET], headers, BODY, now=NOW)
    signing.verify([OLD_SECRET], headers, BODY, now=NOW)
    assert reasons(headers, secrets=[OTHER_SECRET]) == signing.NO_MATCHING_SIGNATURE


def test_rotation_we_accept_any_of_our_secrets() -> None:
    # We rotate: the provider still signs with the old secret until it picks up the new one.
    signing.verify([OTHER_SECRET, OLD_SECRET], reference_headers(OLD_SECRET), BODY, now=NOW)


def test_unknown_signature_versions_are_skipped() -> None:
    valid = reference_headers(SECRET)["webhook-signature"]
    headers = reference_headers(SECRET) | {"webhook-signature": f"v1a,bm90LWEtc2lnbmF0dXJl {valid}"}
    signing.verify([SECRET], headers, BODY, now=NOW)
    headers["webhook-signature"] = "v1a,bm90LWEtc2lnbmF0dXJl v2,abc"
    assert reasons(headers) == signing.NO_SIGNATURE


def test_garbage_signature_is_refused_without_crashing() -> None:
    headers = reference_headers(SECRET) | {"webhook-signature": "v1,签名 v1,%%%"}
    assert reasons(headers) == signing.NO_MATCHING_SIGNATURE


def test_no_secret_refuses_everything() -> None:
    with pytest.raises(SignatureInvalid) as caught:
        signing.verify(["", ""], reference_headers(SECRET), BODY, now=NOW)
    assert caught.value.reason == signing.NO_SECRET


@pytest.mark.parametrize("secret", ["c2VjcmV0", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_malformed_secrets_are_configuration_errors(secret: str) -> None:
    with pytest.raises(ValueError):
        signing.decode_secret(secret)


def test_generated_secret_round_trips() -> None:
    secret = signing.generate_secret()
    headers = signing.sign_headers(secret, "msg_3", BODY, timestamp=NOW)
    signing.verify([secret], headers, BODY, now=NOW)


def test_reason_messages_are_sentences() -> None:
    assert signing.reason_message(signing.STALE_TIMESTAMP) == "The webhook timestamp is too old."
