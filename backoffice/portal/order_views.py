"""The merchant's orders: the list with the API's filters, the CSV export, one order with its
diagnosis and timeline, and "check now"."""

from __future__ import annotations


from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.utils.translation import gettext as _

from backoffice.portal import csv_export
from backoffice.portal.access import MANAGER, OPERATOR, merchant_orders, merchant_tickets, merchant_view, page
from backoffice.portal.forms import order_filter
from backoffice.portal.pagination import keyset_page, page_size_from, query_with
from backoffice.portal.texts import merchant_action
from orders.actors import Actor
from orders.causes import Cause
from orders.diagnosis import Diagnosis
from orders.evidence import diagnose_now, diagnosis_facts
from orders.labels import choice_labels
from orders.models import Order
from orders.recheck import check_order_now
from orders.states import ATTEMPT_OPEN
from orders.timeline import order_timeline
from support.models import TICKET_OPEN_STATUSES

LIST_FIELDS = ("id", "reference", "status", "amount", "currency", "submitted_at", "stuck_since", "stuck_cause",
               "stuck_category", "needs_review", "customer_name", "customer_email")
# Query parameters that are not filters: kept out of the "filters in use" and the export link.
PAGING_PARAMS = ("cursor", "page_size")


def _filter_query(request: HttpRequest) -> str:
    params = request.GET.copy()
    for name in PAGING_PARAMS:
        params.pop(name, None)
    return params.urlencode()


@merchant_view()
def order_list(request: HttpRequest, merchant_code: str) -> HttpResponse:
    filterset = order_filter(request.GET, merchant_orders(request), request)
    filters = _filter_query(request)
    active = sum(1 for name in request.GET if name not in PAGING_PARAMS and any(request.GET.getlist(name)))
    context = {"section": "orders", "filterset": filterset, "form": filterset.form, "filters": filters,
               "active_filters": active, "now": timezone.now()}
    if filterset.is_bound and not filterset.is_valid():
        # As the API answers 400: say which filter is wrong rather than show unfiltered orders.
        return page(request, "merchant/orders.html", {**context, "invalid": True}, status=400)
    size = page_size_from(request.GET.get("page_size"))
    result = keyset_page(filterset.qs.only(*LIST_FIELDS), cursor=request.GET.get("cursor"), page_size=size)
    labels = choice_labels()
    for order in result.rows:
        order.status_label = labels["status"].get(order.status, order.status)
        order.cause_label = labels["cause"].get(order.stuck_cause, order.stuck_cause)
    context.update(
        page=result,
        next_query=query_with(request.GET, cursor=result.next_cursor) if result.next_cursor else "",
        previous_query=query_with(request.GET, cursor=result.previous_cursor) if result.previous_cursor else "",
        first_query=query_with(request.GET, cursor=None),
    )
    return page(request, "merchant/orders.html", context)


@merchant_view(role=MANAGER)
def order_export(request: HttpRequest, merchant_code: str) -> HttpResponse:
    filterset = order_filter(request.GET, merchant_orders(request), request)
    if filterset.is_bound and not filterset.is_valid():
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in filterset.errors.items())
        return HttpResponse(_("These filters are not valid: %(problems)s") % {"problems": problems}, status=400,
                            content_type="text/plain; charset=utf-8")
    filename = f"orders-{request.portal.merchant.code}-{timezone.localtime():%Y%m%d-%H%M}.csv"
    response = StreamingHttpResponse(csv_export.csv_lines(filterset.qs), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _order(request: HttpRequest, order_id: int) -> Order:
    return get_object_or_404(merchant_orders(request), pk=order_id)


def _diagnosis(order: Order, attempts: list) -> dict | None:
    _evidence, verdict = diagnose_now(order.pk)
    if verdict is None:
        if not order.stuck_since or order.stuck_cause not in Cause.values:
            return None
        # Flagged, but the evidence now says nothing holds the order: the sweep will clear the
        # flag shortly. Until then say what it is flagged for, as the list does.
        verdict = Diagnosis(cause=order.stuck_cause, category=order.stuck_category, summary="",
                            recommended_action="", automatic="", needs_review=order.needs_review)
    return {**diagnosis_facts(verdict, attempts), "merchant_action": merchant_action(verdict.cause)}


@merchant_view()
def order_detail(request: HttpRequest, merchant_code: str, order_id: int) -> HttpResponse:
    order = _order(request, order_id)
    attempts = list(order.attempts.order_by("-created_at", "-id"))
    tickets = list(merchant_tickets(request).filter(order=order).order_by("-created_at", "-id"))
    open_ticket = next((t for t in tickets if t.status in TICKET_OPEN_STATUSES), None)
    back = request.GET.get("back", "")
    return page(request, "merchant/order.html", {
        "section": "orders", "order": order, "attempts": attempts, "diagnosis": _diagnosis(order, attempts),
        # Merchants never see internal entries (staff notes, provider checks and callbacks).
        "timeline": order_timeline(order, include_internal=False),
        "tickets": tickets, "open_ticket": open_ticket,
        "can_check": any(a.status in ATTEMPT_OPEN for a in attempts),
        # The list's query (filters and page), re-encoded: "back to the list" lands where they were.
        "back_query": QueryDict(back).urlencode() if back else "",
    })


@merchant_view(role=OPERATOR, write=True)
def order_check_now(request: HttpRequest, merchant_code: str, order_id: int) -> HttpResponse:
    order = _order(request, order_id)
    report = check_order_now(order.pk, actor=Actor.merchant(request.user))
    labels = choice_labels()["attempt"]
    if not report.items:
        messages.info(request, _("No payment of this order is waiting for an answer: there is nothing to check."))
    for item in report.items:
        if item.error:
            messages.warning(request, _("%(provider)s did not answer about payment %(reference)s (%(error)s). "
                                        "We keep checking automatically.")
                             % {"provider": item.provider, "reference": item.reference or "—", "error": item.error})
        elif item.changed:
            messages.success(request, _("%(provider)s says payment %(reference)s is %(status)s; the order is "
                                        "updated.")
                             % {"provider": item.provider, "reference": item.reference or "—",
                                "status": labels.get(item.reported_status, item.reported_status)})
        else:
            messages.success(request, _("%(provider)s says payment %(reference)s is %(status)s; nothing changed.")
                             % {"provider": item.provider, "reference": item.reference or "—",
                                "status": labels.get(item.reported_status, item.reported_status)})
    return redirect("portal:order", merchant_code=merchant_code, order_id=order.pk)
