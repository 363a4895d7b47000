"""The merchant's team, for its managers: who belongs, with which role; add, change, remove.

Every change goes through `orders.memberships` (which records it and keeps at least one
manager); this page shows the latest changes beside the list.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext as _

from backoffice.portal.access import MANAGER, ROLE_RANK, merchant_memberships, merchant_view, page
from backoffice.portal.forms import AddMemberForm, RoleForm
from orders.actors import Actor
from orders.exceptions import DomainError
from orders.memberships import add_member, change_role, remove_member
from orders.models import MembershipEvent, MembershipRole, MerchantMembership

RECENT_CHANGES = 20


def _members_page(request: HttpRequest, *, add_form: AddMemberForm | None = None,
                  row_error: tuple[int, str] | None = None, status: int = 200) -> HttpResponse:
    members = sorted(
        merchant_memberships(request).select_related("user"),
        key=lambda m: (-ROLE_RANK.get(m.role, -1), m.user.get_username().casefold()),
    )
    events = (MembershipEvent.objects.filter(merchant=request.portal.merchant)
              .order_by("-created_at", "-id")[:RECENT_CHANGES])
    return page(request, "merchant/members.html", {
        "section": "members", "members": members, "events": events,
        "add_form": add_form or AddMemberForm(), "roles": MembershipRole.choices,
        "row_error": row_error,
    }, status=status)


@merchant_view(role=MANAGER, form=True)
def member_list(request: HttpRequest, merchant_code: str) -> HttpResponse:
    if request.method != "POST":
        return _members_page(request)
    form = AddMemberForm(request.POST)
    if not form.is_valid():
        return _members_page(request, add_form=form, status=400)
    try:
        membership = add_member(merchant=request.portal.merchant, user=form.user, role=form.cleaned_data["role"],
                                actor=Actor.merchant(request.user))
    except DomainError as exc:
        form.add_error("identifier", exc.message)
        return _members_page(request, add_form=form, status=400)
    messages.success(request, _("%(user)s is now a member, as %(role)s.")
                     % {"user": membership.user.get_username(), "role": membership.get_role_display()})
    return redirect("portal:members", merchant_code=merchant_code)


def _membership(request: HttpRequest, membership_id: int) -> MerchantMembership:
    return get_object_or_404(merchant_memberships(request).select_related("user"), pk=membership_id)


@merchant_view(role=MANAGER, write=True)
def member_role(request: HttpRequest, merchant_code: str, membership_id: int) -> HttpResponse:
    membership = _membership(request, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, row_error=(membership.pk, _("Choose a role.")), status=400)
    try:
        updated = change_role(membership=membership.pk, role=form.cleaned_data["role"],
                              actor=Actor.merchant(request.user))
    except DomainError as exc:
        return _members_page(request, row_error=(membership.pk, exc.message), status=400)
    if updated.role == membership.role:
        messages.info(request, _("%(user)s already has this role.") % {"user": membership.user.get_username()})
    else:
        messages.success(request, _("%(user)s is now %(role)s.")
                         % {"user": membership.user.get_username(), "role": updated.get_role_display()})
    if updated.user_id == request.user.pk and updated.role != MembershipRole.MANAGER:
        # They gave up managing: the members page is no longer theirs.
        return redirect("portal:home", merchant_code=merchant_code)
    return redirect("portal:members", merchant_code=merchant_code)


@merchant_view(role=MANAGER, write=True)
def member_remove(request: HttpRequest, merchant_code: str, membership_id: int) -> HttpResponse:
    membership = _membership(request, membership_id)
    try:
        remove_member(membership=membership.pk, actor=Actor.merchant(request.user))
    except DomainError as exc:
        return _members_page(request, row_error=(membership.pk, exc.message), status=400)
    messages.success(request, _("%(user)s no longer belongs to %(merchant)s.")
                     % {"user": membership.user.get_username(), "merchant": request.portal.merchant.name})
    if membership.user_id == request.user.pk:
        return redirect("portal:choose")
    return redirect("portal:members", merchant_code=merchant_code)
