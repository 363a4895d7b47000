"""The access explainer: can this user see this order, and if not, exactly why not.

Staff use it for the `no_access` cause ("a merchant user says an order is missing"). The
verdict follows `orders.selectors.orders_visible_to` rule by rule; a test holds the two
together so the explanation can never disagree with what the user really sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils.translation import gettext as _

from orders.models import MerchantMembership, Order


@dataclass
class AccessVerdict:
    can_see: bool
    reasons: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    can_act: bool = False  # may use actions such as "check now" on it


def find_user(identifier: str):
    """A user by username, or by email (case-insensitive). None when there is no such user,
    or when an email is shared by several accounts and therefore ambiguous."""
    identifier = identifier.strip()
    if not identifier:
        return None
    users = list(get_user_model().objects.filter(Q(username=identifier) | Q(email__iexact=identifier))[:2])
    return users[0] if len(users) == 1 else None


def explain_access(*, user, order: Order) -> AccessVerdict:
    merchant = order.merchant
    name = user.get_username()
    if not user.is_active:
        return AccessVerdict(
            False,
            [_("The account %(user)s is deactivated; it cannot sign in or see anything.") % {"user": name}],
            [_("Reactivate the account if the person still works with %(merchant)s.") % {"merchant": merchant.name}],
        )
    if user.is_staff or user.is_superuser:
        return AccessVerdict(True, [_("%(user)s is staff: staff see the orders of every merchant.") % {"user": name}],
                             can_act=True)
    memberships = list(MerchantMembership.objects.filter(user=user).select_related("merchant"))
    if not memberships:
        return AccessVerdict(
            False,
            [_("%(user)s belongs to no merchant, so sees no orders at all.") % {"user": name}],
            [_("A manager of %(merchant)s, or payments operations, adds %(user)s as a member.")
             % {"merchant": merchant.name, "user": name}],
        )
    mine = next((m for m in memberships if m.merchant_id == merchant.pk), None)
    if mine is None:
        others = ", ".join(sorted(m.merchant.name for m in memberships))
        return AccessVerdict(
            False,
            [_("Order %(reference)s belongs to %(merchant)s, but %(user)s is a member of %(others)s only.")
             % {"reference": order.reference, "merchant": merchant.name, "user": name, "others": others}],
            [_("If %(user)s should see %(merchant)s's orders, add a membership; otherwise the customer is "
               "asking the wrong merchant.") % {"user": name, "merchant": merchant.name}],
        )
    if not merchant.active:
        return AccessVerdict(
            False,
            [_("%(user)s is a member of %(merchant)s, but the merchant is inactive, which hides all its orders.")
             % {"user": name, "merchant": merchant.name}],
            [_("Payments operations reactivates the merchant if it was deactivated by mistake.")],
        )
    role = MerchantMembership.Role(mine.role)
    can_act = role != MerchantMembership.Role.VIEWER
    reasons = [_("%(user)s is %(role)s at %(merchant)s and sees this order.")
               % {"user": name, "role": role.label, "merchant": merchant.name}]
    fixes = []
    if not can_act:
        reasons.append(_("As a viewer they can read it but not act on it (check now, tickets)."))
        fixes.append(_("A manager of %(merchant)s can make them an operator.") % {"merchant": merchant.name})
    return AccessVerdict(True, reasons, fixes, can_act=can_act)
