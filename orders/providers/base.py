"""The contract every payment provider adapter fulfils.

Adapters map their provider's statuses and errors onto these types inside the adapter,
so the engine only ever sees a `ProviderResult` or a classified `ProviderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProviderResult:
    """What a provider says about one payment, normalized.

    `status` is an `orders.states.AttemptStatus` value: pending, unknown, succeeded,
    failed, expired or cancelled.
    """

    status: str
    provider_reference: str
    amount: Decimal | None = None
    currency: str = ""
    failure_code: str = ""
    action_required: str = ""
    order_reference: str = ""
    merchant: str = ""
    # Our idempotency key for the payment, when the provider echoes it: it names the attempt
    # that started the payment even before we learned the provider's reference.
    idempotency_key: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)
    http_status: int | None = None
    latency_ms: int | None = None


class ProviderError(Exception):
    """A query that got no usable answer. `kind` is a `PaymentCheck.ErrorKind` value:
    timeout, connection, http_error, malformed or not_found."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        http_status: int | None = None,
        latency_ms: int | None = None,
        excerpt: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.latency_ms = latency_ms
        self.excerpt = excerpt


class SignatureInvalid(Exception):
    """A callback whose signature or timestamp does not verify. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedCallback(Exception):
    """A verified callback whose body we cannot understand."""


@dataclass(frozen=True)
class CallbackEvent:
    """One verified provider notification."""

    event_id: str
    event_type: str
    sent_at: datetime | None
    result: ProviderResult


@runtime_checkable
class PaymentProvider(Protocol):
    name: str

    def create_payment(
        self, *, idempotency_key: str, amount: Decimal, currency: str, order_reference: str, merchant: str
    ) -> ProviderResult:
        """Start a payment at the provider. Raises ProviderError."""

    def query(self, provider_reference: str) -> ProviderResult:
        """Ask the provider for the current state of one payment. Raises ProviderError."""

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise SignatureInvalid unless the callback is signed by this provider and fresh."""

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Turn a verified callback into a CallbackEvent. Raises MalformedCallback."""
