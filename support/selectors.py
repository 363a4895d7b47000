"""Reads of tickets scoped by user. Every ticket lookup in views and APIs goes through
`tickets_visible_to`, so a merchant user never reaches another merchant's tickets by
changing an id."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from orders.selectors import is_back_office, merchants_visible_to
from support import sla
from support.models import MERCHANT_VISIBILITIES, TICKET_OPEN_STATUSES, Ticket, TicketMessage, TicketStatus

# A ticket is "due soon" when one of its due times falls within this window.
DUE_SOON = timedelta(hours=1)
_OPEN = sorted(TICKET_OPEN_STATUSES)


# The support staff groups (`backoffice.roles` grants their permissions under these names).
AGENT_GROUP = gettext_noop("Support agent")
LEAD_GROUP = gettext_noop("Support lead")


def lead_emails() -> list[str]:
    """The email addresses of the active support leads (escalations, alerts)."""
    return list(
        get_user_model().objects.filter(groups__name=LEAD_GROUP, is_active=True).exclude(email="")
        .order_by("email").values_list("email", flat=True).distinct()
    )


def tickets_visible_to(user) -> QuerySet[Ticket]:
    if is_back_office(user):
        return Ticket.objects.all()
    return Ticket.objects.filter(merchant__in=merchants_visible_to(user))


def ticket_messages_visible_to(user, ticket: Ticket) -> QuerySet[TicketMessage]:
    """A ticket's conversation as `user` may read it: staff see everything, merchant users the
    public conversation and the merchant notes, never internal notes. The caller has already
    found `ticket` through `tickets_visible_to`."""
    messages = TicketMessage.objects.filter(ticket=ticket).select_related("author_user").order_by("created_at", "id")
    if is_back_office(user):
        return messages
    return messages.filter(visibility__in=sorted(MERCHANT_VISIBILITIES))


def open_tickets_visible_to(user) -> QuerySet[Ticket]:
    return tickets_visible_to(user).filter(status__in=_OPEN)


def my_tickets(user) -> QuerySet[Ticket]:
    """The open tickets assigned to `user`."""
    return open_tickets_visible_to(user).filter(assignee_id=getattr(user, "pk", None))


def unassigned_tickets(user) -> QuerySet[Ticket]:
    return open_tickets_visible_to(user).filter(assignee__isnull=True)


def sla_due_soon_tickets(user, *, now: datetime | None = None, within: timedelta = DUE_SOON) -> QuerySet[Ticket]:
    """Open tickets with a running clock whose first response or resolution is due within
    `within` (or already overdue), soonest resolution first."""
    horizon = (now or timezone.now()) + within
    due = sla.due_by(horizon)
    return open_tickets_visible_to(user).filter(due, sla_paused_at__isnull=True).order_by("resolution_due_at", "pk")


def escalated_tickets(user) -> QuerySet[Ticket]:
    return tickets_visible_to(user).filter(status=TicketStatus.ESCALATED).order_by("-escalated_at", "-pk")


QUEUES = {
    "mine": my_tickets,
    "unassigned": unassigned_tickets,
    "sla_due_soon": sla_due_soon_tickets,
    "escalated": escalated_tickets,
}


def ticket_queue(user, name: str) -> QuerySet[Ticket]:
    """One of the named queues (`QUEUES`) for `user`; KeyError for an unknown name."""
    return QUEUES[name](user)
