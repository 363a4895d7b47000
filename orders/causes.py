"""The closed list of causes of unreturned orders and the category each belongs to."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Category(models.TextChoices):
    SYSTEM = "system", _("System")
    NETWORK = "network", _("Network")
    PROVIDER = "provider", _("Payment provider")
    CUSTOMER = "customer", _("Customer")
    PERMISSION = "permission", _("Permission")


class Cause(models.TextChoices):
    NO_PAYMENT_STARTED = "no_payment_started", _("No payment started")
    AWAITING_CUSTOMER_ACTION = "awaiting_customer_action", _("Awaiting customer action")
    PAYMENT_DECLINED = "payment_declined", _("Payment declined")
    INVALID_CUSTOMER_DATA = "invalid_customer_data", _("Invalid customer data")
    RESULT_UNKNOWN = "result_unknown", _("Payment result unknown")
    PROVIDER_UNREACHABLE = "provider_unreachable", _("Provider unreachable")
    PROVIDER_OUTAGE = "provider_outage", _("Provider outage")
    CALLBACK_LOST = "callback_lost", _("Callback lost")
    AMOUNT_MISMATCH = "amount_mismatch", _("Amount mismatch")
    DUPLICATE_PAYMENT = "duplicate_payment", _("Duplicate payment")
    PROCESSING_ERROR = "processing_error", _("Processing error after payment")
    NO_ACCESS = "no_access", _("No access")


CAUSE_CATEGORY: dict[str, str] = {
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
}


def category_of(cause: str) -> str:
    return CAUSE_CATEGORY[cause]
