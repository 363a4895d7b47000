"""Escalation of tickets whose SLA passed: once per breach, with an email to the assignee or
the leads, never while the clock is paused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command

from orders.actors import Actor
from support import services
from support.models import TicketEvent, TicketPriority, TicketStatus
from tests.orders.engine_helpers import fresh
from tests.support.factories import AGENT, LEAD, SYSTEM, open_ticket_for, replies, staff_in  # noqa: F401

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=dt_timezone.utc)


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def escalate(capture) -> int:
    with capture(execute=True):
        return services.escalate_overdue_tickets()


def test_a_ticket_is_not_escalated_before_its_first_response_is_due(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    clock.shift(timedelta(hours=7, minutes=59))

    assert escalate(django_capture_on_commit_callbacks) == 0
    assert fresh(ticket).status == TicketStatus.NEW


def test_a_missed_first_response_raises_priority_and_escalates(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    clock.shift(timedelta(hours=8))

    assert escalate(django_capture_on_commit_callbacks) == 1

    ticket = fresh(ticket)
    assert (ticket.status, ticket.priority, ticket.escalated_at) == (
        TicketStatus.ESCALATED, TicketPriority.HIGH, START + timedelta(hours=8))
    event = TicketEvent.objects.get(ticket=ticket, kind=TicketEvent.Kind.ESCALATED)
    assert (event.from_value, event.to_value) == (TicketPriority.NORMAL, TicketPriority.HIGH)


def test_escalating_twice_escalates_once_per_breach(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(assignee=staff_in(AGENT))
    clock.shift(timedelta(hours=9))
    escalate(django_capture_on_commit_callbacks)

    assert escalate(django_capture_on_commit_callbacks) == 0
    assert fresh(ticket).priority == TicketPriority.HIGH
    assert len(mail.outbox) == 1


def test_a_later_resolution_breach_escalates_again(clock, django_capture_on_commit_callbacks, replies):  # noqa: F811
    ticket = open_ticket_for(priority=TicketPriority.LOW)
    services.add_message(ticket=ticket, body="On it", visibility="public", actor=Actor.staff(staff_in(AGENT)))
    clock.shift(timedelta(days=7))

    assert escalate(django_capture_on_commit_callbacks) == 1
    assert fresh(ticket).priority == TicketPriority.NORMAL


def test_a_paused_ticket_is_not_escalated(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)
    clock.shift(timedelta(days=10))

    assert escalate(django_capture_on_commit_callbacks) == 0
    assert fresh(ticket).status == TicketStatus.WAITING_ON_CUSTOMER


def test_the_paused_time_does_not_count_towards_the_breach(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    clock.shift(timedelta(hours=1))
    services.change_status(ticket=ticket, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)
    clock.shift(timedelta(hours=10))
    services.change_status(ticket=ticket, to=TicketStatus.OPEN, actor=SYSTEM)
    clock.shift(timedelta(hours=6))  # 7 hours of running clock: not yet due

    assert escalate(django_capture_on_commit_callbacks) == 0

    clock.shift(timedelta(hours=1))
    assert escalate(django_capture_on_commit_callbacks) == 1


def test_escalation_emails_the_assignee(clock, django_capture_on_commit_callbacks):
    agent = staff_in(AGENT, email="agent@example.com")
    staff_in(LEAD, email="lead@example.com")
    ticket = open_ticket_for(assignee=agent)
    clock.shift(timedelta(hours=9))

    escalate(django_capture_on_commit_callbacks)

    [email] = mail.outbox
    assert email.to == ["agent@example.com"]
    assert f"Ticket #{ticket.pk} escalated" in email.subject


def test_escalation_of_an_unassigned_ticket_emails_the_active_leads(clock, django_capture_on_commit_callbacks):
    staff_in(LEAD, email="lead-1@example.com")
    staff_in(LEAD, email="lead-2@example.com")
    staff_in(LEAD, email="gone@example.com", is_active=False)
    open_ticket_for()
    clock.shift(timedelta(hours=9))

    escalate(django_capture_on_commit_callbacks)

    [email] = mail.outbox
    assert sorted(email.to) == ["lead-1@example.com", "lead-2@example.com"]


def test_an_urgent_ticket_stays_urgent_when_escalated(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.URGENT)
    clock.shift(timedelta(hours=2))

    escalate(django_capture_on_commit_callbacks)

    assert fresh(ticket).priority == TicketPriority.URGENT


def test_the_command_runs_one_pass_and_prints_the_count(clock):
    open_ticket_for()
    clock.shift(timedelta(hours=9))
    out = StringIO()

    call_command("escalate_tickets", "--once", stdout=out)

    assert "1 tickets escalated." in out.getvalue()


def test_a_ticket_escalated_by_hand_is_escalated_again_only_at_its_next_breach(
        clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    clock.shift(timedelta(hours=9))  # the first response is overdue
    services.change_status(ticket=ticket, to=TicketStatus.ESCALATED, actor=SYSTEM, reason="customer called")

    assert fresh(ticket).escalated_at == START + timedelta(hours=9)
    assert escalate(django_capture_on_commit_callbacks) == 0  # that breach was handled by hand
    assert fresh(ticket).priority == TicketPriority.NORMAL


def test_escalation_records_the_status_change_like_every_other(clock, django_capture_on_commit_callbacks):
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    clock.shift(timedelta(hours=8))

    escalate(django_capture_on_commit_callbacks)

    change = TicketEvent.objects.get(ticket=ticket, kind=TicketEvent.Kind.STATUS_CHANGED)
    assert (change.from_value, change.to_value) == (TicketStatus.NEW, TicketStatus.ESCALATED)
