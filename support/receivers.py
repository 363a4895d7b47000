"""Tickets follow their orders: receivers of `orders.signals.order_state_changed`, the
ticket messages on the order timeline, and the support schedules."""

from __future__ import annotations

from django.dispatch import receiver
from django.utils.translation import gettext as _

from orders.models import Order
from orders.schedules import register_schedule
from orders.signals import order_state_changed
from orders.timeline import TimelineEntry, register_source
from support.models import TICKET_OPEN_STATUSES, MessageVisibility, Ticket, TicketEvent, TicketMessage


def _enqueue(func: str, order_id: int, name: str) -> None:
    from django_q.tasks import async_task

    async_task(func, order_id, task_name=f"{name}-{order_id}")


@receiver(order_state_changed, dispatch_uid="support.tickets_follow_orders")
def tickets_follow_orders(
    sender, *, order_id: int, old_status: str, new_status: str, was_unreturned: bool, is_unreturned: bool, **kwargs
) -> None:
    # Only status changes are handled here, one order at a time. A change of the flag alone
    # comes from the sweep by the thousand in one batch; the periodic passes
    # (`resolve_tickets_of_returned_orders`, `open_tickets_for_stuck_orders`) handle those in
    # one query each, within a minute, instead of a query per order after every batch.
    if old_status == new_status:
        return
    if was_unreturned and not is_unreturned:
        if Ticket.objects.filter(order_id=order_id, status__in=sorted(TICKET_OPEN_STATUSES)).exists():
            _enqueue("support.tasks.resolve_order_ticket_task", order_id, "resolve-order-ticket")


def _who(user, fallback: str) -> str:
    return user.get_username() if user is not None else fallback


def ticket_timeline(order: Order) -> list[TimelineEntry]:
    """The order's ticket messages and ticket events. Internal notes and ticket history are
    staff-only; public replies and the customer's messages are not."""
    entries: list[TimelineEntry] = []
    messages = TicketMessage.objects.filter(ticket__order=order).select_related("author_user").order_by("-created_at")
    for message in messages[:200]:
        internal = message.visibility == MessageVisibility.INTERNAL
        if internal:
            title = _("Internal note on ticket #%(ticket)s") % {"ticket": message.ticket_id}
        elif message.visibility == MessageVisibility.MERCHANT:
            title = _("Note to the merchant on ticket #%(ticket)s") % {"ticket": message.ticket_id}
        elif message.author_user_id is None and message.author_email:
            title = _("Customer message on ticket #%(ticket)s") % {"ticket": message.ticket_id}
        else:
            title = _("Reply to the customer on ticket #%(ticket)s") % {"ticket": message.ticket_id}
        entries.append(TimelineEntry(
            at=message.created_at, kind="ticket_message", title=title, body=message.body,
            actor=_who(message.author_user, message.author_name or message.author_email or _("system")),
            internal=internal, data={"ticket_id": message.ticket_id, "message_id": message.pk},
        ))
    events = TicketEvent.objects.filter(ticket__order=order).select_related("actor_user").order_by("-created_at")
    for event in events[:200]:
        title = _("Ticket #%(ticket)s: %(kind)s") % {"ticket": event.ticket_id, "kind": event.get_kind_display()}
        body = " → ".join(filter(None, [event.value_label(event.from_value), event.value_label(event.to_value)]))
        if event.message:
            body = f"{body}\n{event.message}" if body else event.message
        entries.append(TimelineEntry(
            at=event.created_at, kind="ticket_event", title=title, body=body,
            actor=_who(event.actor_user, event.actor_kind), internal=True,
            tone="warn" if event.kind == TicketEvent.Kind.ESCALATED else "",
            data={"ticket_id": event.ticket_id, "kind": event.kind},
        ))
    return entries


register_source(ticket_timeline)
register_schedule(name="escalate-tickets", func="support.tasks.escalate_tickets", minutes=1)
register_schedule(name="open-tickets-for-stuck-orders", func="support.tasks.open_tickets_for_stuck_orders_task",
                  minutes=1)
register_schedule(name="resolve-tickets-of-returned-orders",
                  func="support.tasks.resolve_tickets_of_returned_orders_task", minutes=1)
