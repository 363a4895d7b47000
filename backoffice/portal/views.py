"""The portal's entry: the site root, the merchant chooser and a merchant's home page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from backoffice.portal.access import merchant_open_tickets, merchant_orders, merchant_view, page
from backoffice.portal.texts import merchant_action
from orders.causes import CAUSE_CATEGORY, Category, Cause
from orders.filters import AGE_CHOICES
from orders.selectors import is_back_office, memberships_of
from orders.snapshots import unreturned_counts

OLDEST_SHOWN = 5


@require_safe
def site_root(request: HttpRequest) -> HttpResponse:
    """Staff go to the admin, everyone else to the merchant portal (via the login page)."""
    if not request.user.is_authenticated:
        return redirect("login")
    if is_back_office(request.user):
        return redirect("admin:index")
    return redirect("portal:choose")


@never_cache
@login_required
@require_safe
def choose_merchant(request: HttpRequest) -> HttpResponse:
    """One merchant: straight to it. Several: a chooser. None: say so, and where to go."""
    memberships = list(memberships_of(request.user))
    if len(memberships) == 1:
        return redirect("portal:home", merchant_code=memberships[0].merchant.code)
    context = {"memberships": memberships, "is_staff": is_back_office(request.user), "portal": None}
    return render(request, "merchant/choose.html", context)


@merchant_view()
def home(request: HttpRequest, merchant_code: str) -> HttpResponse:
    orders = merchant_orders(request)
    counts = unreturned_counts(orders=orders)
    by_category: dict[str, list[dict]] = {}
    for cause, count in sorted(counts["by_cause"].items(), key=lambda item: -item[1]):
        category = CAUSE_CATEGORY.get(cause, "")
        by_category.setdefault(category, []).append({
            "cause": cause, "label": Cause(cause).label if cause in Cause.values else cause, "count": count,
            "action": merchant_action(cause),
        })
    categories = [
        {"category": category, "label": Category(category).label if category in Category.values else category,
         "total": counts["by_category"].get(category, 0), "causes": causes}
        for category, causes in sorted(by_category.items(), key=lambda item: -sum(c["count"] for c in item[1]))
    ]
    ages = [{"code": code, "label": label, "count": counts["by_age"].get(code, 0)} for code, label in AGE_CHOICES]
    oldest = list(
        orders.filter(stuck_since__isnull=False).order_by("stuck_since", "id")
        .only("id", "reference", "stuck_since", "stuck_cause", "needs_review", "amount", "currency")[:OLDEST_SHOWN]
    )
    open_tickets = merchant_open_tickets(request).count()
    return page(request, "merchant/home.html", {
        "section": "home", "counts": counts, "categories": categories, "ages": ages, "oldest": oldest,
        "open_tickets": open_tickets, "now": timezone.now(),
    })
