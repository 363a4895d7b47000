"""django-q2 tasks: thin wrappers that take ids and call the support services."""

from __future__ import annotations

from orders.actors import Actor
from support import services

AUTOMATION = "support automation"


def escalate_tickets() -> str:
    return f"escalated={services.escalate_overdue_tickets()}"


def open_tickets_for_stuck_orders_task() -> str:
    return f"opened={services.open_tickets_for_stuck_orders()}"


def resolve_order_ticket_task(order_id: int) -> str:
    ticket = services.resolve_order_ticket(order_id=order_id, actor=Actor.system(AUTOMATION))
    return f"resolved ticket {ticket.pk}" if ticket else "nothing to resolve"


def resolve_tickets_of_returned_orders_task() -> str:
    return f"resolved={services.resolve_tickets_of_returned_orders(actor=Actor.system(AUTOMATION))}"
