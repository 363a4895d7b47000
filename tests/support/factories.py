"""Tickets reached through `support.services`, staff in the support groups, SLA targets,
and unreturned orders flagged the way the engine flags them."""

from __future__ import annotations

from datetime import timedelta

import factory
import pytest
from django.contrib.auth.models import Group

from orders.actors import Actor
from orders.causes import Cause
from orders.models import Merchant, Order
from support import services
from support.models import SlaTarget, Ticket, TicketPriority, TicketSource
from tests.orders.engine_helpers import flag_order, pending_order
from tests.orders.factories import MerchantFactory, StaffUserFactory

AGENT = "Support agent"
LEAD = "Support lead"
SYSTEM = Actor.system("support test")


def staff_in(group: str, **kwargs):
    user = StaffUserFactory(**kwargs)
    user.groups.add(Group.objects.get(name=group))
    return user


class SlaTargetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SlaTarget

    merchant = None
    priority = TicketPriority.NORMAL
    first_response = timedelta(hours=2)
    resolution = timedelta(hours=10)


def stuck_order(cause: str = Cause.RESULT_UNKNOWN, *, needs_review: bool = False,
                merchant: Merchant | None = None, **kwargs) -> Order:
    """A payment_pending order flagged unreturned with `cause`, freshly read."""
    order, _attempt = pending_order(merchant=merchant or MerchantFactory(), **kwargs)
    flag_order(order, cause, needs_review=needs_review)
    return Order.objects.select_related("merchant").get(pk=order.pk)


def open_ticket_for(order: Order | None = None, *, actor: Actor = SYSTEM, **kwargs) -> Ticket:
    """A ticket opened through the service (an order's, by default a fresh order's)."""
    if order is None and "merchant" not in kwargs:
        order, _attempt = pending_order()
    kwargs.setdefault("subject", "Customer asks about the payment")
    kwargs.setdefault("source", TicketSource.STAFF)
    return services.open_ticket(order=order, actor=actor, **kwargs)


@pytest.fixture
def replies(monkeypatch) -> list:
    """The messages handed to the outbox (`support.notifications.queue_ticket_reply`), which
    is tested on its own; import explicitly: `from tests.support.factories import replies`."""
    queued: list = []
    monkeypatch.setattr("support.notifications.queue_ticket_reply", queued.append, raising=False)
    return queued
