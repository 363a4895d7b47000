"""SLA targets and the clock that pauses while a ticket waits on the customer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
import time_machine

from support import services, sla
from support.models import TicketPriority, TicketStatus
from tests.orders.engine_helpers import fresh
from tests.orders.factories import MerchantFactory
from tests.support.factories import SYSTEM, SlaTargetFactory, open_ticket_for

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=dt_timezone.utc)


@pytest.mark.parametrize(("priority", "first", "resolution"), [
    (TicketPriority.URGENT, timedelta(hours=1), timedelta(hours=4)),
    (TicketPriority.HIGH, timedelta(hours=4), timedelta(hours=24)),
    (TicketPriority.NORMAL, timedelta(hours=8), timedelta(days=3)),
    (TicketPriority.LOW, timedelta(hours=24), timedelta(days=7)),
])
def test_without_target_rows_the_built_in_targets_apply(priority, first, resolution):
    assert sla.targets_for(MerchantFactory(), priority) == sla.Targets(first, resolution)


def test_the_default_row_overrides_the_built_in_target():
    SlaTargetFactory(merchant=None, first_response=timedelta(hours=2), resolution=timedelta(hours=10))

    assert sla.targets_for(MerchantFactory(), TicketPriority.NORMAL) == sla.Targets(
        timedelta(hours=2), timedelta(hours=10))


def test_a_merchants_own_row_overrides_the_default_row():
    merchant = MerchantFactory()
    SlaTargetFactory(merchant=None)
    SlaTargetFactory(merchant=merchant, first_response=timedelta(minutes=30), resolution=timedelta(hours=1))

    assert sla.targets_for(merchant, TicketPriority.NORMAL).first_response == timedelta(minutes=30)
    assert sla.targets_for(MerchantFactory(), TicketPriority.NORMAL).first_response == timedelta(hours=2)


def test_waiting_on_the_customer_pauses_the_clock():
    with time_machine.travel(START, tick=False) as clock:
        ticket = open_ticket_for()
        clock.shift(timedelta(hours=1))

        services.change_status(ticket=ticket, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)

    assert fresh(ticket).sla_paused_at == START + timedelta(hours=1)


def test_leaving_waiting_on_the_customer_moves_the_due_times_by_the_paused_time():
    with time_machine.travel(START, tick=False) as clock:
        ticket = open_ticket_for()
        clock.shift(timedelta(hours=1))
        services.change_status(ticket=ticket, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)
        clock.shift(timedelta(hours=5))

        services.change_status(ticket=ticket, to=TicketStatus.OPEN, actor=SYSTEM)

    ticket = fresh(ticket)
    assert ticket.sla_paused_at is None
    assert ticket.first_response_due_at == START + timedelta(hours=8 + 5)
    assert ticket.resolution_due_at == START + timedelta(days=3, hours=5)


def test_resolving_while_waiting_on_the_customer_stops_the_pause():
    with time_machine.travel(START, tick=False) as clock:
        ticket = open_ticket_for()
        services.change_status(ticket=ticket, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)
        clock.shift(timedelta(hours=2))

        services.change_status(ticket=ticket, to=TicketStatus.RESOLVED, actor=SYSTEM)

    assert fresh(ticket).sla_paused_at is None
