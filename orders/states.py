"""Statuses and the transition tables for orders and payment attempts.

These tables are the only definition of a legal move; `orders.services` enforces them.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class OrderStatus(models.TextChoices):
    SUBMITTED = "submitted", _("Submitted")
    PAYMENT_PENDING = "payment_pending", _("Payment pending")
    PAID = "paid", _("Paid")
    CONFIRMED = "confirmed", _("Confirmed")
    PAYMENT_FAILED = "payment_failed", _("Payment failed")
    CANCELLED = "cancelled", _("Cancelled")
    EXPIRED = "expired", _("Expired")
    REFUNDED = "refunded", _("Refunded")


class AttemptStatus(models.TextChoices):
    INITIATED = "initiated", _("Initiated")
    PENDING = "pending", _("Pending")
    UNKNOWN = "unknown", _("Unknown")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    EXPIRED = "expired", _("Expired")
    CANCELLED = "cancelled", _("Cancelled")


O = OrderStatus
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    O.SUBMITTED: frozenset({O.PAYMENT_PENDING, O.CANCELLED, O.EXPIRED}),
    O.PAYMENT_PENDING: frozenset({O.PAID, O.PAYMENT_FAILED, O.CANCELLED, O.EXPIRED}),
    # A failed payment rests here until the customer tries again with a new attempt.
    O.PAYMENT_FAILED: frozenset({O.PAYMENT_PENDING, O.CANCELLED, O.EXPIRED}),
    O.PAID: frozenset({O.CONFIRMED, O.REFUNDED}),
    O.CONFIRMED: frozenset({O.REFUNDED}),
    O.CANCELLED: frozenset(),
    O.EXPIRED: frozenset(),
    O.REFUNDED: frozenset(),
}

# Terminal: nothing more will happen without a refund. payment_failed is not here: a new
# attempt may still revive the order.
ORDER_TERMINAL: frozenset[str] = frozenset({O.CONFIRMED, O.CANCELLED, O.EXPIRED, O.REFUNDED})
# Money has been captured for the order.
ORDER_CAPTURED: frozenset[str] = frozenset({O.PAID, O.CONFIRMED, O.REFUNDED})

A = AttemptStatus
ATTEMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    A.INITIATED: frozenset({A.PENDING, A.UNKNOWN, A.SUCCEEDED, A.FAILED, A.EXPIRED, A.CANCELLED}),
    A.PENDING: frozenset({A.UNKNOWN, A.SUCCEEDED, A.FAILED, A.EXPIRED, A.CANCELLED}),
    # "unknown" is never turned into "failed" by us without the provider saying so;
    # the table allows it because the provider may say so.
    A.UNKNOWN: frozenset({A.PENDING, A.SUCCEEDED, A.FAILED, A.EXPIRED, A.CANCELLED}),
    A.SUCCEEDED: frozenset(),
    A.FAILED: frozenset(),
    A.EXPIRED: frozenset(),
    A.CANCELLED: frozenset(),
}
ATTEMPT_FINAL: frozenset[str] = frozenset({A.SUCCEEDED, A.FAILED, A.EXPIRED, A.CANCELLED})
ATTEMPT_OPEN: frozenset[str] = frozenset({A.INITIATED, A.PENDING, A.UNKNOWN})


def order_move_allowed(current: str, target: str) -> bool:
    return target in ORDER_TRANSITIONS.get(current, frozenset())


def attempt_move_allowed(current: str, target: str) -> bool:
    return target in ATTEMPT_TRANSITIONS.get(current, frozenset())
