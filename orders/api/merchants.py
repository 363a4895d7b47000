"""Which merchant an API write is for, when the body may leave it out (creating an order, opening
a ticket without an order)."""

from __future__ import annotations

from django.utils.translation import gettext as _
from rest_framework import exceptions

from orders.models import Merchant
from orders.selectors import can_write_for, first_writable_merchants, is_back_office, merchants_visible_to


def writable_sample(request) -> list[Merchant]:
    """Up to two merchants the request's user may write for, read once per request: the
    collection-level write permission asks whether there is one, and `merchant_for_write`
    takes the only one (or finds the named one among them) from the same read."""
    sample = getattr(request, "_writable_merchants", None)
    if sample is None:
        sample = request._writable_merchants = first_writable_merchants(request.user)
    return sample


def merchant_for_write(request, code: str | None) -> Merchant:
    """The merchant named by `code` among those the request's user sees, or, without a code, the
    only one the user may write for. Staff always name it. Unknown codes answer 400 on
    `merchant` (another merchant's code reveals nothing); a merchant the user only reads
    answers 403."""
    user = request.user
    back_office = is_back_office(user)
    if back_office and not code:
        raise exceptions.ValidationError({"merchant": [_("Give the merchant's code.")]})
    candidates = [] if back_office else writable_sample(request)
    if code:
        for merchant in candidates:
            if merchant.code == code:
                return merchant
        merchant = merchants_visible_to(user).filter(code=code).first()
        if merchant is None:
            raise exceptions.ValidationError({"merchant": [_("You have no merchant with this code.")]})
        if not can_write_for(user, merchant.pk):
            raise exceptions.PermissionDenied(_("Your role for this merchant allows reading only."))
        return merchant
    if not candidates:
        raise exceptions.PermissionDenied(_("Your role for this merchant allows reading only."))
    if len(candidates) > 1:
        raise exceptions.ValidationError(
            {"merchant": [_("You belong to several merchants: say which one with its code.")]}
        )
    return candidates[0]
