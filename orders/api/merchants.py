"""Which merchant an API write is for, when the body may leave it out (creating an order, opening
a ticket without an order)."""

from __future__ import annotations

from django.utils.translation import gettext as _
from rest_framework import exceptions

from orders.models import Merchant
from orders.selectors import can_write_for, is_back_office, merchants_visible_to, writable_merchants


def merchant_for_write(user, code: str | None) -> Merchant:
    """The merchant named by `code` among those `user` sees, or, without a code, the only one the
    user may write for. Staff always name it. Unknown codes answer 400 on `merchant` (another
    merchant's code reveals nothing); a merchant the user only reads answers 403."""
    if is_back_office(user) and not code:
        raise exceptions.ValidationError({"merchant": [_("Give the merchant's code.")]})
    if code:
        merchant = merchants_visible_to(user).filter(code=code).first()
        if merchant is None:
            raise exceptions.ValidationError({"merchant": [_("You have no merchant with this code.")]})
        if not can_write_for(user, merchant.pk):
            raise exceptions.PermissionDenied(_("Your role for this merchant allows reading only."))
        return merchant
    candidates = list(writable_merchants(user)[:2])
    if not candidates:
        raise exceptions.PermissionDenied(_("Your role for this merchant allows reading only."))
    if len(candidates) > 1:
        raise exceptions.ValidationError(
            {"merchant": [_("You belong to several merchants: say which one with its code.")]}
        )
    return candidates[0]
