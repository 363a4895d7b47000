"""What a merchant's staff can do about each cause, in their words.

The diagnosis' own recommended action speaks to our support staff ("use the access
explainer"); the portal says what the merchant can do, and what they can leave to us.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from orders.causes import Cause

MERCHANT_ACTION = {
    Cause.NO_PAYMENT_STARTED: _("Contact the customer if you want the sale; otherwise the order expires on its own."),
    Cause.AWAITING_CUSTOMER_ACTION: _("Remind the customer to finish the payment with their bank (3-D Secure or "
                                      "the bank's app)."),
    Cause.PAYMENT_DECLINED: _("Offer the customer another payment method."),
    Cause.INVALID_CUSTOMER_DATA: _("Ask the customer for the correct address or phone number and send it to us in "
                                   "a ticket."),
    Cause.RESULT_UNKNOWN: _("Nothing yet: we keep asking the payment provider. Do not ask the customer to pay "
                            "again."),
    Cause.PROVIDER_UNREACHABLE: _("Nothing: we keep checking until the payment provider answers again."),
    Cause.PROVIDER_OUTAGE: _("Nothing for single orders: the payment provider has an incident and we are "
                             "following it."),
    Cause.CALLBACK_LOST: _("Nothing: the payment provider's result is applied automatically."),
    Cause.AMOUNT_MISMATCH: _("Our team compares the amounts with the payment provider. Open a ticket if you "
                             "know why they differ."),
    Cause.DUPLICATE_PAYMENT: _("The customer paid twice; one payment is refunded. Open a ticket if the customer "
                               "asks about it."),
    Cause.PROCESSING_ERROR: _("Our team is fixing the confirmation. Open a ticket if the customer is waiting."),
    Cause.NO_ACCESS: _("Someone in your team reported this order missing: check your team's memberships, or "
                       "open a ticket."),
}


def merchant_action(cause: str) -> str:
    text = MERCHANT_ACTION.get(cause)
    return str(text) if text else ""
