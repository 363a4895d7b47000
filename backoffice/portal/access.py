"""Who may open which portal page: one decorator for every view under /merchant/<merchant_code>/.

In this order, so that nothing is said about a merchant the user does not belong to:

1. not logged in: redirect to the login page;
2. `merchant_code` is not among the user's memberships of active merchants (unknown code,
   another merchant's code, an inactive merchant): 404, never 403, so codes do not leak;
3. a method the view does not take: 405 (`require_safe` for pages, `require_POST` for writes);
4. a role below the view's: 403, with a page that says which role is needed.

The view then finds `request.portal` (the merchant, the membership, all memberships of the
user for the switcher). Objects are looked up with `merchant_orders` / `merchant_tickets`:
the scoping selectors restricted to the merchant of the URL, so another merchant's id is 404.
An `Http404` raised by a view is answered with the portal's own not-found page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from orders.models import MembershipRole, Merchant, MerchantMembership, Order
from orders.selectors import WRITE_ROLES, memberships_of, orders_visible_to
from support.models import Ticket
from support.selectors import open_tickets_visible_to, tickets_visible_to

VIEWER, OPERATOR, MANAGER = MembershipRole.VIEWER, MembershipRole.OPERATOR, MembershipRole.MANAGER
ROLE_RANK: dict[str, int] = {VIEWER: 0, OPERATOR: 1, MANAGER: 2}
# The portal's "operator and up" is the selectors' idea of who may act.
assert {role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[OPERATOR]} == set(WRITE_ROLES)


@dataclass(frozen=True)
class Portal:
    """The merchant of the current page and the user's place at it."""

    merchant: Merchant
    membership: MerchantMembership
    memberships: tuple[MerchantMembership, ...]  # every merchant of the user, for the switcher

    @property
    def role(self) -> str:
        return self.membership.role

    @property
    def role_label(self) -> str:
        return str(MembershipRole(self.role).label)

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    @property
    def can_act(self) -> bool:
        return self.role in WRITE_ROLES

    @property
    def can_manage(self) -> bool:
        return self.role == MANAGER

    @property
    def others(self) -> list[MerchantMembership]:
        return [m for m in self.memberships if m.merchant_id != self.merchant.pk]


def portal_of(request: HttpRequest, merchant_code: str) -> Portal | None:
    """The user's membership of the merchant with this code, or None (one query)."""
    memberships = tuple(memberships_of(request.user))
    current = next((m for m in memberships if m.merchant.code == merchant_code), None)
    if current is None:
        return None
    return Portal(merchant=current.merchant, membership=current, memberships=memberships)


def not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "merchant/not_found.html", {"portal": getattr(request, "portal", None)}, status=404)


def forbidden(request: HttpRequest, role: str) -> HttpResponse:
    context = {"portal": request.portal, "needed_role": MembershipRole(role).label}
    return render(request, "merchant/forbidden.html", context, status=403)


def _role_required(role: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.portal.has_role(role):
                return forbidden(request, role)
            return view(request, *args, **kwargs)
        return checked
    return decorator


def merchant_view(*, role: str = VIEWER, write: bool = False, form: bool = False) -> Callable:
    """Decorate a portal view taking `merchant_code` for users with at least `role` at that
    merchant: a page (GET/HEAD), with `write` a POST-only action, with `form` a page whose form
    posts back to it (GET/HEAD/POST)."""
    if role not in ROLE_RANK or (write and form):
        raise ValueError(role)
    methods = require_POST if write else (require_http_methods(["GET", "HEAD", "POST"]) if form else require_safe)

    def decorator(view: Callable) -> Callable:
        # Methods before the role: a viewer posting to a page learns 405, as anyone would.
        by_method = methods(_role_required(role)(view))

        @wraps(by_method)
        def resolved(request: HttpRequest, merchant_code: str, **kwargs) -> HttpResponse:
            portal = portal_of(request, merchant_code)
            if portal is None:
                return not_found(request)
            request.portal = portal
            try:
                return by_method(request, merchant_code=merchant_code, **kwargs)
            except Http404:
                return not_found(request)

        return login_required(never_cache(resolved))

    return decorator


def merchant_orders(request: HttpRequest) -> QuerySet[Order]:
    """The orders of the page's merchant, as the scoping selector lets this user see them."""
    return orders_visible_to(request.user).filter(merchant=request.portal.merchant)


def merchant_tickets(request: HttpRequest) -> QuerySet[Ticket]:
    return tickets_visible_to(request.user).filter(merchant=request.portal.merchant)


def merchant_open_tickets(request: HttpRequest) -> QuerySet[Ticket]:
    return open_tickets_visible_to(request.user).filter(merchant=request.portal.merchant)


def merchant_memberships(request: HttpRequest) -> QuerySet[MerchantMembership]:
    """The memberships of the page's merchant (only managers reach the views that use it)."""
    return MerchantMembership.objects.filter(merchant=request.portal.merchant)


def page(request: HttpRequest, template: str, context: dict | None = None, *, status: int = 200) -> HttpResponse:
    """Render a portal page with `portal` (the merchant, the role) in its context."""
    return render(request, template, {"portal": request.portal, **(context or {})}, status=status)
