"""Who may write what. Reads are scoped by `orders.selectors`; these classes decide writes.

- Staff (is_staff) act as back office: writes allowed, guarded actions need their permission
  (`orders.check_now`, `orders.cancel_order`, `orders.mark_paid`; `support.add_ticket`,
  `support.reply_ticket` for tickets), as in the admin.
- Merchant users write only for a merchant where their membership is operator or manager;
  a viewer reads and every write answers 403. The same rule holds for every object with a
  merchant (orders, tickets).
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import SAFE_METHODS, BasePermission

from orders.actors import Actor
from orders.api.merchants import writable_sample
from orders.selectors import can_write_for, is_back_office


def actor_for(user) -> Actor:
    return Actor.staff(user) if is_back_office(user) else Actor.merchant(user)


class MerchantWritePermission(BasePermission):
    """Object level: writes on an object of a merchant (an order, a ticket: anything with
    `merchant_id`) need staff or an operator/manager membership of that merchant.
    Collection level (create): a user with no writable merchant at all is refused up front."""

    message = _("Your role for this merchant allows reading only.")

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS or getattr(view, "detail", False) or is_back_office(request.user):
            return True
        return bool(writable_sample(request))

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return can_write_for(request.user, obj.merchant_id)


class StaffPermission(BasePermission):
    """Staff must hold the permission for the action (`codename`, or `app_label.codename`; a bare
    codename is an `orders` one); merchant users pass to the object check (operator/manager)
    unless the action is staff-only. With `writes_only`, reads pass (a route that lists with GET
    and adds with POST)."""

    message = _("You do not have permission to do this.")

    def __init__(self, codename: str, *, staff_only: bool = False, writes_only: bool = False) -> None:
        self.perm = codename if "." in codename else f"orders.{codename}"
        self.staff_only = staff_only
        self.writes_only = writes_only

    def __call__(self):  # DRF instantiates permission classes; an instance stands in for its class
        return self

    def has_permission(self, request, view) -> bool:
        if self.writes_only and request.method in SAFE_METHODS:
            return True
        if is_back_office(request.user):
            return request.user.has_perm(self.perm)
        return not self.staff_only


def staff_permission(codename: str, *, staff_only: bool = False, writes_only: bool = False) -> StaffPermission:
    return StaffPermission(codename, staff_only=staff_only, writes_only=writes_only)
