"""`HttpProvider`: the adapter for providers that speak the sandbox's JSON-over-HTTP API.

Everything provider-specific stops here: the provider's statuses are mapped onto
`AttemptStatus` values and every failure is classified into a `ProviderError.kind`, so the
re-check engine never sees httpx or the provider's JSON shapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
from django.utils.translation import gettext as _

from orders.providers import signing
from orders.providers.base import CallbackEvent, MalformedCallback, ProviderError, ProviderResult
from orders.states import AttemptStatus

# Error kinds, as `PaymentCheck.ErrorKind` values; spelled out here so the adapter does not
# import the models module.
TIMEOUT = "timeout"
CONNECTION = "connection"
HTTP_ERROR = "http_error"
MALFORMED = "malformed"
NOT_FOUND = "not_found"

EXCERPT_CHARS = 500
# A provider answer is a few hundred bytes; anything much larger is broken or hostile and is
# not worth holding in memory.
MAX_RESPONSE_BYTES = 1024 * 1024
QUERY_RETRY_DELAY = 0.1  # seconds before re-sending a GET whose connection failed

# The sandbox's vocabulary -> ours. Unknown statuses are refused as malformed: guessing would
# risk treating "money moved" as "no money moved" or the reverse.
STATUS_MAP: dict[str, str] = {
    "pending": AttemptStatus.PENDING,
    "processing": AttemptStatus.PENDING,
    "succeeded": AttemptStatus.SUCCEEDED,
    "failed": AttemptStatus.FAILED,
    "expired": AttemptStatus.EXPIRED,
    "cancelled": AttemptStatus.CANCELLED,
    "canceled": AttemptStatus.CANCELLED,
}

EVENT_STATUS_MAP: dict[str, str] = {
    "payment.pending": AttemptStatus.PENDING,
    "payment.succeeded": AttemptStatus.SUCCEEDED,
    "payment.failed": AttemptStatus.FAILED,
    "payment.expired": AttemptStatus.EXPIRED,
    "payment.cancelled": AttemptStatus.CANCELLED,
}


class _Malformed(ValueError):
    """A response or payload field that is missing or has the wrong shape."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _string(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise _Malformed(key)
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Malformed(key)
    return value.strip()


def _amount(data: Mapping[str, Any], key: str = "amount") -> Decimal:
    value = data.get(key)
    # JSON numbers are accepted through their text, never through float arithmetic.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Malformed(key)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise _Malformed(key) from exc
    if not amount.is_finite() or amount < 0:
        raise _Malformed(key)
    return amount


def _currency(data: Mapping[str, Any]) -> str:
    currency = _string(data, "currency")
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise _Malformed("currency")
    return currency.upper()


def payment_fields(data: Any, status_map: Mapping[str, str], status_value: str) -> dict[str, Any]:
    """The normalized fields of one payment object, shared by query answers and callbacks."""
    if not isinstance(data, Mapping):
        raise _Malformed("payment")
    status = status_map.get(status_value)
    if status is None:
        raise _Malformed("status")
    return {
        "status": status,
        "provider_reference": _string(data, "provider_reference"),
        "amount": _amount(data),
        "currency": _currency(data),
        "failure_code": _string(data, "failure_code", required=False),
        "action_required": _string(data, "action_required", required=False),
        "order_reference": _string(data, "order_reference", required=False),
        "merchant": _string(data, "merchant", required=False),
        "idempotency_key": _string(data, "idempotency_key", required=False),
    }


class HttpProvider:
    """A `PaymentProvider` over HTTP with one pooled `httpx.Client` per instance.

    The registry keeps one instance per provider per process, so connections are reused
    across checks; httpx clients are safe to share between threads.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        webhook_secrets: Sequence[str] = (),
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        query_retries: int = 1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        # Empty entries come from optional environment variables ("previous secret" unset).
        self.webhook_secrets: tuple[str, ...] = tuple(s for s in webhook_secrets if s)
        for secret in self.webhook_secrets:
            signing.decode_secret(secret)  # fail at start-up, not on the first callback
        self.query_retries = max(0, int(query_retries))
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            headers={"accept": "application/json", "user-agent": "order-recovery-desk/1"},
            transport=transport,
            # A provider that redirects an API call is misconfigured; following it could
            # re-send a create to somewhere else.
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"<HttpProvider {self.name} {self.base_url}>"

    def close(self) -> None:
        self.client.close()

    # --- outbound ------------------------------------------------------------------------

    def create_payment(
        self, *, idempotency_key: str, amount: Decimal, currency: str, order_reference: str, merchant: str
    ) -> ProviderResult:
        payload = {
            "idempotency_key": idempotency_key,
            "amount": format(Decimal(amount), "f"),
            "currency": currency,
            "order_reference": order_reference,
            "merchant": merchant,
        }
        # Never retried here: after a timeout we cannot know whether the provider created the
        # payment. The attempt becomes "unknown" and a later create with the same idempotency
        # key (which the provider de-duplicates) or a query settles it.
        return self._call(
            "POST", "/v1/payments", json_body=payload, headers={"idempotency-key": idempotency_key}, retries=0
        )

    def query(self, provider_reference: str) -> ProviderResult:
        if not provider_reference:
            raise ProviderError(NOT_FOUND, _("There is no provider reference to look up."))
        # Quoted as one path segment so a reference can never reach another endpoint.
        path = "/v1/payments/" + quote(provider_reference, safe="")
        return self._call("GET", path, retries=self.query_retries, not_found_is_error=True)

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int,
        not_found_is_error: bool = False,
    ) -> ProviderResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            # The whole call, retries included: that is what the engine waited for.
            return int((time.monotonic() - started) * 1000)

        tries = 0
        while True:
            tries += 1
            try:
                status_code, body = self._send(method, path, json_body=json_body, headers=headers)
                break
            except httpx.TimeoutException as exc:
                # Not retried even for reads: a provider that is slow now is slow on the next
                # try too, and the engine's batch would wait twice.
                raise ProviderError(
                    TIMEOUT,
                    _("The provider did not answer in time (%(error)s).") % {"error": type(exc).__name__},
                    latency_ms=elapsed_ms(),
                ) from exc
            except httpx.TransportError as exc:
                # A refused or dropped connection never reached the provider's logic, so a
                # read can safely be sent again; pooled keep-alive connections closed by the
                # server show up here too.
                if tries <= retries:
                    time.sleep(QUERY_RETRY_DELAY)
                    continue
                raise ProviderError(
                    CONNECTION,
                    _("Could not reach the provider (%(error)s).") % {"error": type(exc).__name__},
                    latency_ms=elapsed_ms(),
                ) from exc
            except _ResponseTooLarge as exc:
                raise ProviderError(
                    MALFORMED,
                    _("The provider's answer is larger than %(limit)d bytes.") % {"limit": MAX_RESPONSE_BYTES},
                    http_status=exc.status_code,
                    latency_ms=elapsed_ms(),
                ) from exc

        latency = elapsed_ms()
        # Replacement characters keep a broken answer readable in the excerpt only; the JSON
        # parser below sees the raw bytes and rejects invalid UTF-8.
        short = excerpt(body.decode("utf-8", errors="replace"))
        if status_code == 404 and not_found_is_error:
            raise ProviderError(
                NOT_FOUND,
                _("The provider does not know this payment."),
                http_status=status_code,
                latency_ms=latency,
                excerpt=short,
            )
        if not 200 <= status_code < 300:
            raise ProviderError(
                HTTP_ERROR,
                _("The provider answered with HTTP %(status)d.") % {"status": status_code},
                http_status=status_code,
                latency_ms=latency,
                excerpt=short,
            )
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ProviderError(
                MALFORMED,
                _("The provider's answer is not valid JSON."),
                http_status=status_code,
                latency_ms=latency,
                excerpt=short,
            ) from exc
        try:
            if not isinstance(data, dict):
                raise _Malformed("payment")
            status_value = data.get("status")
            fields = payment_fields(data, STATUS_MAP, status_value if isinstance(status_value, str) else "")
        except _Malformed as exc:
            raise ProviderError(
                MALFORMED,
                _("The provider's answer has a missing or invalid field: %(field)s.") % {"field": exc.args[0]},
                http_status=status_code,
                latency_ms=latency,
                excerpt=short,
            ) from exc
        return ProviderResult(**fields, raw=data, http_status=status_code, latency_ms=latency)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, bytes]:
        request = self.client.build_request(method, path, json=json_body, headers=headers)
        response = self.client.send(request, stream=True)
        try:
            received = bytearray()
            for chunk in response.iter_bytes():
                received += chunk
                if len(received) > MAX_RESPONSE_BYTES:
                    raise _ResponseTooLarge(response.status_code)
        finally:
            response.close()
        return response.status_code, bytes(received)

    # --- inbound -------------------------------------------------------------------------

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        signing.verify(self.webhook_secrets, headers, body)

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Parse a callback body. Does not verify: the webhook view also parses unverified
        callbacks to find which attempt to re-check."""
        event_id = signing.header(headers, signing.HEADER_ID)
        if event_id is None:
            raise MalformedCallback(_("The callback has no webhook-id header."))
        sent_at = None
        timestamp = signing.header(headers, signing.HEADER_TIMESTAMP)
        if timestamp is not None and timestamp.isascii() and timestamp.isdigit():
            try:
                sent_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
            except (OverflowError, OSError, ValueError):
                sent_at = None
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedCallback(_("The callback body is not valid JSON.")) from exc
        if not isinstance(payload, dict):
            raise MalformedCallback(_("The callback body is not a JSON object."))
        event_type = payload.get("type")
        if not isinstance(event_type, str) or event_type not in EVENT_STATUS_MAP:
            raise MalformedCallback(_("The callback has an unknown event type."))
        try:
            fields = payment_fields(payload.get("data"), EVENT_STATUS_MAP, event_type)
        except _Malformed as exc:
            raise MalformedCallback(
                _("The callback has a missing or invalid field: %(field)s.") % {"field": exc.args[0]}
            ) from exc
        return CallbackEvent(
            event_id=event_id,
            event_type=event_type,
            sent_at=sent_at,
            result=ProviderResult(**fields, raw=payload),
        )


class _ResponseTooLarge(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code
