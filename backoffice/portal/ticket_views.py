"""The merchant's support tickets: the list, opening one, the conversation and replies.

Merchant users read the public conversation and the notes between them and our staff, never
our internal notes; they write replies to the customer or notes to our team.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext as _

from backoffice.portal.access import (
    OPERATOR,
    merchant_open_tickets,
    merchant_orders,
    merchant_tickets,
    merchant_view,
    page,
)
from backoffice.portal.forms import OpenTicketForm, ReplyForm, TicketStatusFilter
from orders.actors import Actor
from orders.exceptions import DomainError
from orders.models import Order
from support.models import MERCHANT_VISIBILITIES, OTHER_CATEGORY, MessageVisibility, Ticket, TicketSource
from support.selectors import ticket_messages_visible_to
from support.services import TicketAlreadyOpen, add_message, open_ticket, ticket_subject

TICKETS_PER_PAGE = 25


@merchant_view()
def ticket_list(request: HttpRequest, merchant_code: str) -> HttpResponse:
    form = TicketStatusFilter(request.GET)
    show = form.cleaned_data["status"] if form.is_valid() and form.cleaned_data["status"] else "open"
    tickets = (merchant_open_tickets(request) if show == "open" else merchant_tickets(request))
    tickets = tickets.select_related("order").order_by("-created_at", "-id")
    paginator = Paginator(tickets, TICKETS_PER_PAGE)
    tickets_page = paginator.get_page(request.GET.get("page"))
    return page(request, "merchant/tickets.html", {
        "section": "tickets", "show": show, "tickets_page": tickets_page, "paginator": paginator,
    })


def _order_from_query(request: HttpRequest) -> Order | None:
    value = request.GET.get("order")
    if not value:
        return None
    if not value.isdigit():
        raise Http404
    return get_object_or_404(merchant_orders(request), pk=int(value))


def _open_ticket_of(request: HttpRequest, order: Order | None) -> Ticket | None:
    if order is None:
        return None
    return merchant_open_tickets(request).filter(order=order).first()


@merchant_view(role=OPERATOR, form=True)
def ticket_new(request: HttpRequest, merchant_code: str) -> HttpResponse:
    if request.method != "POST":
        order = _order_from_query(request)
        initial = {}
        if order is not None:
            initial = {"order_reference": order.reference, "subject": ticket_subject(order),
                       "category": order.stuck_cause or OTHER_CATEGORY}
        form = OpenTicketForm(initial=initial, orders=merchant_orders(request))
        return page(request, "merchant/ticket_new.html", {
            "section": "tickets", "form": form, "order": order, "already_open": _open_ticket_of(request, order),
        })
    form = OpenTicketForm(request.POST, orders=merchant_orders(request))
    context = {"section": "tickets", "form": form, "order": None, "already_open": None}
    if not form.is_valid():
        return page(request, "merchant/ticket_new.html", context, status=400)
    data = form.cleaned_data
    try:
        ticket = open_ticket(
            subject=data["subject"], source=TicketSource.MERCHANT, actor=Actor.merchant(request.user),
            merchant=request.portal.merchant, order=form.order, category=data["category"],
            priority=data["priority"], body=data["body"], visibility=data["visibility"],
        )
    except TicketAlreadyOpen as exc:
        # The order is this merchant's, so its open ticket is too.
        context.update(order=form.order, already_open=exc.ticket)
        return page(request, "merchant/ticket_new.html", context, status=409)
    except DomainError as exc:
        form.add_error(None, exc.message)
        return page(request, "merchant/ticket_new.html", context, status=400)
    messages.success(request, _("Ticket #%(ticket)s is open. Our support team will answer here.")
                     % {"ticket": ticket.pk})
    return redirect("portal:ticket", merchant_code=merchant_code, ticket_id=ticket.pk)


def _ticket_page(request: HttpRequest, ticket: Ticket, form: ReplyForm, *, status: int = 200) -> HttpResponse:
    # Whoever reads (a staff user may also be a member), the portal shows the merchant's side.
    conversation = ticket_messages_visible_to(request.user, ticket).filter(
        visibility__in=sorted(MERCHANT_VISIBILITIES))
    return page(request, "merchant/ticket.html", {
        "section": "tickets", "ticket": ticket, "conversation": conversation, "form": form,
    }, status=status)


def _ticket(request: HttpRequest, ticket_id: int) -> Ticket:
    return get_object_or_404(merchant_tickets(request).select_related("order"), pk=ticket_id)


@merchant_view()
def ticket_detail(request: HttpRequest, merchant_code: str, ticket_id: int) -> HttpResponse:
    return _ticket_page(request, _ticket(request, ticket_id), ReplyForm())


@merchant_view(role=OPERATOR, write=True)
def ticket_reply(request: HttpRequest, merchant_code: str, ticket_id: int) -> HttpResponse:
    ticket = _ticket(request, ticket_id)
    form = ReplyForm(request.POST)
    if not form.is_valid():
        return _ticket_page(request, ticket, form, status=400)
    visibility = form.cleaned_data["visibility"]
    try:
        add_message(ticket=ticket.pk, body=form.cleaned_data["body"], visibility=visibility,
                    actor=Actor.merchant(request.user))
    except DomainError as exc:
        form.add_error(None, exc.message)
        return _ticket_page(request, ticket, form, status=400)
    if visibility == MessageVisibility.PUBLIC:
        messages.success(request, _("Your reply is sent to the customer by email."))
    else:
        messages.success(request, _("Your note is sent to our support team."))
    return redirect(reverse("portal:ticket", kwargs={"merchant_code": merchant_code, "ticket_id": ticket.pk})
                    + "#conversation")
