"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/).

A callback carries three headers: `webhook-id` (unique per event, kept across redeliveries),
`webhook-timestamp` (Unix seconds of this delivery) and `webhook-signature`, a space-separated
list of `v1,<base64 HMAC-SHA256>` entries over `"{id}.{timestamp}.{body}"`. Several entries let a
provider sign with an old and a new secret while secrets rotate; we keep a list of accepted
secrets for the same reason, so either side can rotate without losing callbacks.

Secrets look like `whsec_<base64>`; the decoded bytes are the HMAC key.

This module has no Django dependency beyond lazy translations, so the sandbox provider (a
separate process that simulates a third party) can sign with the very same code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from django.utils.translation import gettext_lazy as _

from orders.providers.base import SignatureInvalid

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds, both ways: the Standard Webhooks recommendation

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

# Reasons are stable machine codes: they are stored with the journaled callback and asserted in
# tests. `reason_message` gives the translated sentence for people.
MISSING_HEADER = "missing header"
INVALID_TIMESTAMP = "invalid timestamp"
STALE_TIMESTAMP = "stale timestamp"
FUTURE_TIMESTAMP = "future timestamp"
NO_SIGNATURE = "no signature"
NO_MATCHING_SIGNATURE = "no matching signature"
NO_SECRET = "no secret configured"

_REASON_MESSAGES = {
    MISSING_HEADER: _("A webhook signature header is missing."),
    INVALID_TIMESTAMP: _("The webhook timestamp is not a whole number of seconds."),
    STALE_TIMESTAMP: _("The webhook timestamp is too old."),
    FUTURE_TIMESTAMP: _("The webhook timestamp is too far in the future."),
    NO_SIGNATURE: _("The webhook carries no signature of a supported version."),
    NO_MATCHING_SIGNATURE: _("No webhook signature matches any of our secrets."),
    NO_SECRET: _("No webhook secret is configured for this provider."),
}


def reason_message(reason: str) -> str:
    """The translated explanation of a `SignatureInvalid.reason`, for staff pages."""
    return str(_REASON_MESSAGES.get(reason, reason))


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret. ValueError if it is not one.

    The prefix is required: a bare string would otherwise be used as a key silently, and a
    misconfigured secret must fail loudly at start-up rather than reject every callback."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secrets must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 after the whsec_ prefix") from exc
    if len(key) < 16:
        # Shorter keys are guessable; Standard Webhooks asks for 24 to 64 bytes.
        raise ValueError("webhook secret is shorter than 16 bytes")
    return key


def generate_secret(nbytes: int = 32) -> str:
    """A fresh `whsec_` secret, for operators setting up a provider."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _as_seconds(moment: datetime | float | int) -> int:
    return int(moment.timestamp()) if isinstance(moment, datetime) else int(moment)


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    # The body is signed as the exact bytes on the wire: decoding and re-encoding it could
    # change it (BOMs, invalid UTF-8) and make a correct signature fail.
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: datetime | float | int, body: bytes | str) -> str:
    """One `v1,<base64>` signature of `body` for the `webhook-signature` header."""
    return f"{SIGNATURE_VERSION},{_digest(decode_secret(secret), msg_id, _as_seconds(timestamp), _as_bytes(body))}"


def sign_headers(
    secrets: str | Iterable[str],
    msg_id: str,
    body: bytes | str,
    *,
    timestamp: datetime | float | int | None = None,
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery; several secrets give several
    signatures, as a provider does while rotating its secret."""
    seconds = _as_seconds(time.time() if timestamp is None else timestamp)
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list:
        raise ValueError("at least one secret is needed to sign")
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(seconds),
        HEADER_SIGNATURE: " ".join(sign(secret, msg_id, seconds, body) for secret in secret_list),
    }


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup: plain dicts from tests, `request.headers` and raw
    transport headers all work the same."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == lowered:
                value = candidate
                break
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_timestamp(value: str) -> int:
    """The webhook-timestamp header as Unix seconds. SignatureInvalid if it is not an integer."""
    # isdigit alone would accept "²" and other Unicode digits that int() rejects or misreads.
    if not (value.isascii() and value.isdigit()):
        raise SignatureInvalid(INVALID_TIMESTAMP)
    return int(value)


def verify(
    secrets: Iterable[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: datetime | float | int | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return if any `v1` signature in the headers matches any of `secrets` and the
    timestamp is within `tolerance` seconds of `now`; raise SignatureInvalid otherwise."""
    keys = [decode_secret(secret) for secret in secrets if secret]
    if not keys:
        raise SignatureInvalid(NO_SECRET)

    msg_id = header(headers, HEADER_ID)
    timestamp_text = header(headers, HEADER_TIMESTAMP)
    signature_text = header(headers, HEADER_SIGNATURE)
    if msg_id is None or timestamp_text is None or signature_text is None:
        raise SignatureInvalid(MISSING_HEADER)

    # The timestamp is checked before the signature so a replayed old delivery is refused
    # even when its signature is perfectly valid.
    timestamp = parse_timestamp(timestamp_text)
    current = _as_seconds(time.time() if now is None else now)
    if timestamp < current - tolerance:
        raise SignatureInvalid(STALE_TIMESTAMP)
    if timestamp > current + tolerance:
        raise SignatureInvalid(FUTURE_TIMESTAMP)

    offered: list[bytes] = []
    for entry in signature_text.split():
        version, _sep, value = entry.partition(",")
        # Other versions (v1a is the asymmetric scheme) are skipped, not failed: a provider
        # may send them next to a v1 signature.
        if version == SIGNATURE_VERSION and value:
            offered.append(value.encode("utf-8", "replace"))
    if not offered:
        raise SignatureInvalid(NO_SIGNATURE)

    payload = _as_bytes(body)
    matched = False
    for key in keys:
        expected = _digest(key, msg_id, timestamp, payload).encode("ascii")
        for candidate in offered:
            # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
            # No early exit either, so timing does not reveal which secret matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureInvalid(NO_MATCHING_SIGNATURE)
