"""The single write path for a merchant's memberships: add a member, change a role, remove one.

Each call runs in one transaction that first locks the merchant's row, so two changes of one
merchant's memberships queue instead of racing (two managers demoting each other at once
cannot leave the merchant without a manager). Each change appends one `MembershipEvent`.

A merchant keeps at least one manager: demoting or removing the last one is refused with
`LastManager`, and nothing changes.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from orders.actors import Actor
from orders.exceptions import DomainError, ValidationFailed
from orders.models import MembershipEvent, MembershipEventKind, MembershipRole, Merchant, MerchantMembership


class LastManager(DomainError):
    """The change would leave the merchant without a manager."""

    code = "last_manager"


class AlreadyMember(ValidationFailed):
    code = "already_member"


def _lock_merchant(merchant: Merchant | int) -> Merchant:
    merchant_id = merchant if isinstance(merchant, int) else merchant.pk
    return Merchant.objects.select_for_update().get(pk=merchant_id)


def _load_membership(membership: MerchantMembership | int) -> MerchantMembership:
    """Read a membership (no row lock of its own: the merchant's lock guards its memberships, so
    callers read it again once they hold that lock)."""
    membership_id = membership if isinstance(membership, int) else membership.pk
    try:
        return MerchantMembership.objects.select_related("user").get(pk=membership_id)
    except MerchantMembership.DoesNotExist:
        raise ValidationFailed(_("This membership no longer exists.")) from None


def _check_role(role: str) -> None:
    if role not in MembershipRole.values:
        raise ValidationFailed(_("“%(role)s” is not a role.") % {"role": role}, field="role")


def _record(membership: MerchantMembership, *, kind: str, actor: Actor, from_role: str = "",
            to_role: str = "") -> MembershipEvent:
    return MembershipEvent.objects.create(
        merchant_id=membership.merchant_id, user=membership.user, username=membership.user.get_username(),
        actor_id=actor.user_id, actor_username=actor.user.get_username() if actor.user is not None else "",
        kind=kind, from_role=from_role, to_role=to_role,
    )


def is_last_manager(membership: MerchantMembership) -> bool:
    """Whether `membership` is its merchant's only manager with an active account."""
    if membership.role != MembershipRole.MANAGER:
        return False
    return not MerchantMembership.objects.filter(
        merchant_id=membership.merchant_id, role=MembershipRole.MANAGER, user__is_active=True
    ).exclude(pk=membership.pk).exists()


def last_manager_message(membership: MerchantMembership) -> str:
    return _("%(user)s is the last manager of this merchant. Make someone else a manager first.") % {
        "user": membership.user.get_username()
    }


def inactive_account_message() -> str:
    return _("Only an active account can become a member.")


def managers_left_without(removed: list[MerchantMembership]) -> list[str]:
    """For removing all of `removed` at once: a message per merchant that would be left without
    an active manager (empty when every merchant keeps one)."""
    by_merchant: dict[int, set[int]] = {}
    for membership in removed:
        by_merchant.setdefault(membership.merchant_id, set()).add(membership.pk)
    managers = MerchantMembership.objects.filter(
        merchant_id__in=by_merchant, role=MembershipRole.MANAGER, user__is_active=True
    ).select_related("merchant").order_by("merchant__name")
    remaining: dict[int, int] = {merchant_id: 0 for merchant_id in by_merchant}
    names: dict[int, str] = {}
    for manager in managers:
        names[manager.merchant_id] = manager.merchant.name
        remaining[manager.merchant_id] += manager.pk not in by_merchant[manager.merchant_id]
    return [
        _("%(merchant)s would lose its last manager. Make someone else a manager first.")
        % {"merchant": names[merchant_id]}
        for merchant_id, left in remaining.items() if left == 0 and merchant_id in names
    ]


def _refuse_losing_last_manager(membership: MerchantMembership) -> None:
    """Called with the merchant locked, for a change that takes `membership` out of the managers."""
    if is_last_manager(membership):
        raise LastManager(last_manager_message(membership))


def add_member(*, merchant: Merchant | int, user, role: str, actor: Actor) -> MerchantMembership:
    """Give an active user a role at the merchant. A user who is already a member raises
    AlreadyMember (change their role instead)."""
    _check_role(role)
    if user is None or not user.is_active:
        raise ValidationFailed(inactive_account_message(), field="user")
    with transaction.atomic():
        locked = _lock_merchant(merchant)
        if MerchantMembership.objects.filter(merchant=locked, user=user).exists():
            raise AlreadyMember(_("%(user)s is already a member of %(merchant)s.")
                                % {"user": user.get_username(), "merchant": locked.name}, field="user")
        try:
            with transaction.atomic():
                membership = MerchantMembership.objects.create(merchant=locked, user=user, role=role)
        except IntegrityError:  # the unique (user, merchant) constraint, should a writer slip past
            raise AlreadyMember(_("%(user)s is already a member of %(merchant)s.")
                                % {"user": user.get_username(), "merchant": locked.name}, field="user") from None
        _record(membership, kind=MembershipEventKind.ADDED, actor=actor, to_role=role)
    return membership


def change_role(*, membership: MerchantMembership | int, role: str, actor: Actor) -> MerchantMembership:
    """Move a member to another role; the same role changes nothing and records nothing."""
    _check_role(role)
    with transaction.atomic():
        current = _load_membership(membership)
        _lock_merchant(current.merchant_id)
        current = _load_membership(current.pk)  # read again now that the merchant is ours
        if current.role == role:
            return current
        if role != MembershipRole.MANAGER:
            _refuse_losing_last_manager(current)
        previous = current.role
        current.role = role
        current.save(update_fields=["role"])
        _record(current, kind=MembershipEventKind.ROLE_CHANGED, actor=actor, from_role=previous, to_role=role)
    return current


def remove_member(*, membership: MerchantMembership | int, actor: Actor) -> None:
    """End a membership: the user no longer sees the merchant's orders or tickets."""
    with transaction.atomic():
        current = _load_membership(membership)
        _lock_merchant(current.merchant_id)
        current = _load_membership(current.pk)
        _refuse_losing_last_manager(current)
        _record(current, kind=MembershipEventKind.REMOVED, actor=actor, from_role=current.role)
        current.delete()
