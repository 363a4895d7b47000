"""Tickets through `support.services`: opening, messages, status, priority, assignment, the
customer's report, scoping, and the order page's "open ticket" action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import translation

from orders.actors import Actor
from orders.causes import Cause
from orders.exceptions import IllegalTransition, ValidationFailed
from support import services
from support.models import Ticket, TicketEvent, TicketPriority, TicketSource, TicketStatus
from support.selectors import (
    escalated_tickets,
    my_tickets,
    sla_due_soon_tickets,
    ticket_messages_visible_to,
    tickets_visible_to,
    unassigned_tickets,
)
from support.services import TicketAlreadyOpen
from tests.backoffice.factories import PAYMENTS, messages_of, order_url
from tests.orders.engine_helpers import fresh, pending_order
from tests.orders.factories import MembershipFactory, StaffUserFactory, UserFactory
from tests.support.factories import AGENT, SYSTEM, open_ticket_for, replies, staff_in, stuck_order  # noqa: F401

pytestmark = pytest.mark.django_db

Status = TicketStatus
Kind = TicketEvent.Kind


def kinds(ticket) -> list[str]:
    return list(TicketEvent.objects.filter(ticket=ticket).order_by("created_at", "id").values_list("kind", flat=True))


# --- open_ticket ---------------------------------------------------------------------------------


def test_a_ticket_for_an_order_takes_the_orders_merchant_and_customer():
    order, _attempt = pending_order()

    ticket = open_ticket_for(order)

    assert (ticket.merchant_id, ticket.order_id, ticket.status) == (order.merchant_id, order.pk, Status.NEW)
    assert (ticket.customer_name, ticket.customer_email) == (order.customer_name, order.customer_email)


def test_a_new_ticket_gets_its_sla_due_times_from_its_priority():
    ticket = open_ticket_for(priority=TicketPriority.URGENT)

    assert ticket.first_response_due_at - ticket.created_at == timedelta(hours=1)
    assert ticket.resolution_due_at - ticket.created_at == timedelta(hours=4)


def test_opening_records_a_created_event_and_the_first_message():
    ticket = open_ticket_for(body="Customer called about a double charge.")

    assert kinds(ticket) == [Kind.CREATED]
    [message] = ticket.messages.all()
    assert (message.body, message.visibility) == ("Customer called about a double charge.", "internal")


def test_a_second_open_ticket_for_the_same_order_is_refused_with_the_first():
    order, _attempt = pending_order()
    first = open_ticket_for(order)

    with pytest.raises(TicketAlreadyOpen) as raised:
        open_ticket_for(order)

    assert raised.value.ticket == first
    assert Ticket.objects.filter(order=order).count() == 1


def test_the_database_constraint_is_the_last_guard_against_a_second_open_ticket(monkeypatch):
    order, _attempt = pending_order()
    first = open_ticket_for(order)
    real = services._open_ticket_of
    calls = []

    def racing(order_id, **kwargs):
        calls.append(order_id)
        return None if len(calls) == 1 else real(order_id, **kwargs)  # the check misses the racing insert

    monkeypatch.setattr(services, "_open_ticket_of", racing)

    with pytest.raises(TicketAlreadyOpen) as raised:
        open_ticket_for(order)

    assert raised.value.ticket == first


def test_the_constraint_allows_one_open_ticket_per_order_in_the_database():
    order, _attempt = pending_order()
    first = open_ticket_for(order)

    with pytest.raises(IntegrityError):
        Ticket.objects.create(merchant=first.merchant, order=order, subject="again", status=Status.OPEN)


def test_a_ticket_needs_a_subject():
    with pytest.raises(ValidationFailed):
        open_ticket_for(subject="  ")


def test_a_ticket_without_an_order_needs_a_merchant():
    with pytest.raises(ValidationFailed):
        services.open_ticket(subject="Question", source=TicketSource.STAFF, actor=SYSTEM)


# --- add_message -----------------------------------------------------------------------------------


def test_an_empty_message_is_refused():
    ticket = open_ticket_for()

    with pytest.raises(ValidationFailed):
        services.add_message(ticket=ticket, body="   ", visibility="public", actor=SYSTEM)


def test_a_staff_public_reply_sets_the_first_response_and_is_queued_for_the_customer(replies):  # noqa: F811
    ticket = open_ticket_for()
    agent = staff_in(AGENT)

    message = services.add_message(ticket=ticket, body="We are on it.", visibility="public", actor=Actor.staff(agent))

    ticket = fresh(ticket)
    assert ticket.first_responded_at == message.created_at
    assert replies == [message]
    assert message.author_user_id == agent.pk


def test_a_later_reply_keeps_the_first_response_time(replies):  # noqa: F811
    ticket = open_ticket_for()
    actor = Actor.staff(staff_in(AGENT))
    first = services.add_message(ticket=ticket, body="One", visibility="public", actor=actor)

    services.add_message(ticket=ticket, body="Two", visibility="public", actor=actor)

    assert fresh(ticket).first_responded_at == first.created_at
    assert len(replies) == 2


def test_an_internal_note_is_not_sent_and_is_no_first_response(replies):  # noqa: F811
    ticket = open_ticket_for()

    services.add_message(ticket=ticket, body="Checked the bank.", visibility="internal",
                         actor=Actor.staff(staff_in(AGENT)))

    assert fresh(ticket).first_responded_at is None
    assert replies == []


def test_the_first_staff_message_moves_a_new_ticket_to_open(replies):  # noqa: F811
    ticket = open_ticket_for()

    services.add_message(ticket=ticket, body="Looking.", visibility="internal", actor=Actor.staff(staff_in(AGENT)))

    assert fresh(ticket).status == Status.OPEN
    assert kinds(ticket) == [Kind.CREATED, Kind.STATUS_CHANGED]


def test_a_customer_message_brings_a_ticket_waiting_on_the_customer_back_to_open(replies):  # noqa: F811
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=Status.WAITING_ON_CUSTOMER, actor=SYSTEM)

    services.add_message(ticket=ticket, body="Here is my receipt.", visibility="public",
                         actor=Actor.customer("li.wei@example.com"))

    ticket = fresh(ticket)
    assert ticket.status == Status.OPEN
    assert ticket.sla_paused_at is None
    assert replies == []  # the customer's own message is not emailed back


def test_a_merchant_message_brings_a_ticket_waiting_on_the_merchant_back_to_open(replies):  # noqa: F811
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=Status.WAITING_ON_MERCHANT, actor=SYSTEM)
    member = MembershipFactory(merchant=ticket.merchant, role="operator").user

    services.add_message(ticket=ticket, body="Stock arrives Monday.", visibility="public", actor=Actor.merchant(member))

    assert fresh(ticket).status == Status.OPEN


def test_a_customer_message_reopens_a_resolved_ticket(replies):  # noqa: F811
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    services.add_message(ticket=ticket, body="Still not working.", visibility="public",
                         actor=Actor.customer("li.wei@example.com"))

    ticket = fresh(ticket)
    assert (ticket.status, ticket.reopened_count, ticket.resolved_at) == (Status.OPEN, 1, None)
    assert kinds(ticket)[-1] == Kind.REOPENED


def test_a_customer_cannot_write_an_internal_note():
    ticket = open_ticket_for()

    with pytest.raises(ValidationFailed):
        services.add_message(ticket=ticket, body="psst", visibility="internal", actor=Actor.customer("x@example.com"))


def test_a_merchant_user_cannot_write_an_internal_note():
    ticket = open_ticket_for()
    member = MembershipFactory(merchant=ticket.merchant, role="operator").user

    with pytest.raises(ValidationFailed):
        services.add_message(ticket=ticket, body="psst", visibility="internal", actor=Actor.merchant(member))


def test_a_merchant_user_cannot_open_a_ticket_with_an_internal_note():
    order = stuck_order()
    member = MembershipFactory(merchant=order.merchant, role="operator").user

    with pytest.raises(ValidationFailed):
        services.open_ticket(subject="Help", source=TicketSource.MERCHANT, order=order, body="psst",
                             visibility="internal", actor=Actor.merchant(member))


def test_a_merchant_note_is_not_sent_to_the_customer_and_is_no_first_response(replies):  # noqa: F811
    ticket = open_ticket_for()

    services.add_message(ticket=ticket, body="Can you confirm stock?", visibility="merchant",
                         actor=Actor.staff(staff_in(AGENT)))

    assert fresh(ticket).first_responded_at is None
    assert replies == []


def test_merchant_users_read_public_replies_and_merchant_notes_but_no_internal_notes():
    ticket = open_ticket_for()
    agent = Actor.staff(staff_in(AGENT))
    for visibility in ("public", "merchant", "internal"):
        services.add_message(ticket=ticket, body=f"a {visibility} message", visibility=visibility, actor=agent)
    member = MembershipFactory(merchant=ticket.merchant, role="viewer").user

    seen = [m.visibility for m in ticket_messages_visible_to(member, ticket)]
    staff_seen = [m.visibility for m in ticket_messages_visible_to(staff_in(AGENT), ticket)]

    assert seen == ["public", "merchant"]
    assert staff_seen == ["public", "merchant", "internal"]


# --- status, priority, assignee -------------------------------------------------------------------


def test_a_status_change_records_from_to_and_actor():
    ticket = open_ticket_for()
    agent = staff_in(AGENT)

    services.change_status(ticket=ticket, to=Status.WAITING_ON_MERCHANT, actor=Actor.staff(agent), reason="asked")

    event = TicketEvent.objects.filter(ticket=ticket, kind=Kind.STATUS_CHANGED).get()
    assert (event.from_value, event.to_value, event.actor_user_id, event.message) == (
        Status.NEW, Status.WAITING_ON_MERCHANT, agent.pk, "asked")


def test_resolving_sets_the_resolution_time():
    ticket = services.change_status(ticket=open_ticket_for(), to=Status.RESOLVED, actor=SYSTEM)

    assert fresh(ticket).resolved_at is not None


def test_a_closed_ticket_cannot_become_waiting_directly():
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=Status.CLOSED, actor=SYSTEM)

    with pytest.raises(IllegalTransition):
        services.change_status(ticket=ticket, to=Status.WAITING_ON_CUSTOMER, actor=SYSTEM)


def test_reopening_counts_and_records_a_reopened_event():
    ticket = open_ticket_for()
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    services.change_status(ticket=ticket, to=Status.OPEN, actor=SYSTEM)

    assert fresh(ticket).reopened_count == 1
    assert kinds(ticket)[-1] == Kind.REOPENED


def test_reopening_fails_while_the_order_has_another_open_ticket():
    order, _attempt = pending_order()
    old = open_ticket_for(order)
    services.change_status(ticket=old, to=Status.RESOLVED, actor=SYSTEM)
    open_ticket_for(order)

    with pytest.raises(TicketAlreadyOpen):
        services.change_status(ticket=old, to=Status.OPEN, actor=SYSTEM)

    assert fresh(old).status == Status.RESOLVED


def test_a_priority_change_moves_the_due_times_and_records_it():
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)

    services.change_priority(ticket=ticket, to=TicketPriority.URGENT, actor=SYSTEM, reason="VIP")

    ticket = fresh(ticket)
    assert ticket.first_response_due_at - ticket.created_at == timedelta(hours=1)
    assert ticket.resolution_due_at - ticket.created_at == timedelta(hours=4)
    event = TicketEvent.objects.get(ticket=ticket, kind=Kind.PRIORITY_CHANGED)
    assert (event.from_value, event.to_value) == (TicketPriority.NORMAL, TicketPriority.URGENT)


def test_assigning_records_the_new_assignee_once():
    ticket = open_ticket_for()
    agent = staff_in(AGENT, username="agent-ann")

    services.assign_ticket(ticket=ticket, assignee=agent, actor=SYSTEM)
    services.assign_ticket(ticket=ticket, assignee=agent, actor=SYSTEM)

    assert fresh(ticket).assignee_id == agent.pk
    assert list(TicketEvent.objects.filter(ticket=ticket, kind=Kind.ASSIGNEE_CHANGED)
                .values_list("to_value", flat=True)) == ["agent-ann"]


# --- report_problem ----------------------------------------------------------------------------------


def test_a_customer_report_opens_a_ticket_with_the_orders_cause():
    order = stuck_order(Cause.AWAITING_CUSTOMER_ACTION)

    ticket = services.report_problem(order=order, name="Wang", email="WANG.FANG@example.com",
                                     message="My bank app shows nothing.")

    assert (ticket.source, ticket.category, ticket.order_id) == (TicketSource.CUSTOMER, order.stuck_cause, order.pk)
    [message] = ticket.messages.all()
    assert (message.visibility, message.author_email, message.author_name, message.author_user_id) == (
        "public", "WANG.FANG@example.com", "Wang", None)


def test_a_customer_report_with_another_email_is_refused():
    order, _attempt = pending_order()

    with pytest.raises(ValidationFailed):
        services.report_problem(order=order, name="Eve", email="eve@example.com", message="Let me in")

    assert not Ticket.objects.filter(order=order).exists()


@pytest.mark.parametrize("message", ["", "   ", "x" * 4001])
def test_a_customer_report_needs_a_message_of_at_most_4000_characters(message):
    order, _attempt = pending_order()

    with pytest.raises(ValidationFailed):
        services.report_problem(order=order, name="Wang", email=order.customer_email, message=message)


def test_a_customer_report_goes_to_the_orders_open_ticket():
    order, _attempt = pending_order()
    ticket = open_ticket_for(order)

    reported = services.report_problem(order=order, name="Wang", email=order.customer_email, message="Any news?")

    assert reported.pk == ticket.pk
    assert ticket.messages.get().body == "Any news?"


def test_a_customer_report_reopens_the_resolved_ticket():
    order, _attempt = pending_order()
    ticket = open_ticket_for(order)
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    reported = services.report_problem(order=order, name="Wang", email=order.customer_email, message="Again!")

    assert reported.pk == ticket.pk
    assert (reported.status, reported.reopened_count) == (Status.OPEN, 1)


# --- selectors ------------------------------------------------------------------------------------------


def test_merchant_users_see_only_their_merchants_tickets():
    mine = open_ticket_for()
    open_ticket_for()  # another merchant's
    user = UserFactory()
    MembershipFactory(user=user, merchant=mine.merchant)

    assert list(tickets_visible_to(user)) == [mine]
    assert tickets_visible_to(StaffUserFactory()).count() == 2
    assert tickets_visible_to(UserFactory()).count() == 0


def test_the_queues_hold_mine_unassigned_due_soon_and_escalated():
    agent = staff_in(AGENT)
    assigned = open_ticket_for(assignee=agent, priority=TicketPriority.URGENT)
    unassigned = open_ticket_for(priority=TicketPriority.LOW)
    services.change_status(ticket=unassigned, to=Status.ESCALATED, actor=SYSTEM)

    assert list(my_tickets(agent)) == [assigned]
    assert list(unassigned_tickets(agent)) == [unassigned]
    assert list(sla_due_soon_tickets(agent)) == [assigned]  # urgent: first response within the hour
    assert list(escalated_tickets(agent)) == [unassigned]


# --- the order page's "open ticket" action ------------------------------------------------------------


def test_the_open_ticket_form_is_prefilled_with_the_orders_cause(client):
    order = stuck_order(Cause.CALLBACK_LOST)
    client.force_login(staff_in(AGENT))

    response = client.get(order_url(order, "open_ticket"))

    assert response.status_code == 200
    assert f"Order {order.reference} unreturned: Callback lost" in response.content.decode()


def test_the_open_ticket_action_opens_a_ticket_with_the_internal_note(client):
    order, _attempt = pending_order()
    agent = staff_in(AGENT)
    client.force_login(agent)

    response = client.post(order_url(order, "open_ticket"),
                           {"subject": "Check the payment", "priority": "high", "note": "Customer phoned."})

    assert response.status_code == 302
    ticket = Ticket.objects.get(order=order)
    assert (ticket.subject, ticket.priority, ticket.source) == ("Check the payment", "high", TicketSource.STAFF)
    note = ticket.messages.get()
    assert (note.body, note.visibility, note.author_user_id) == ("Customer phoned.", "internal", agent.pk)
    assert TicketEvent.objects.get(ticket=ticket, kind=Kind.CREATED).actor_user_id == agent.pk


def test_the_open_ticket_action_points_to_the_open_ticket_instead_of_a_second(client):
    order, _attempt = pending_order()
    existing = open_ticket_for(order)
    client.force_login(staff_in(AGENT))

    response = client.post(order_url(order, "open_ticket"), {"subject": "Again", "priority": "normal"})

    assert response.status_code == 302
    assert any("already has an open ticket" in m and f"#{existing.pk}" in m for m in messages_of(response))
    assert Ticket.objects.filter(order=order).count() == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_without_add_ticket_cannot_open_a_ticket(client, method):
    order, _attempt = pending_order()
    client.force_login(staff_in(PAYMENTS))

    response = getattr(client, method)(order_url(order, "open_ticket"), {"subject": "x", "priority": "normal"})

    assert response.status_code == 403
    assert not Ticket.objects.filter(order=order).exists()


def test_the_bulk_action_opens_one_ticket_per_order_and_skips_those_with_one(client):
    first, _a = pending_order()
    second, _b = pending_order()
    open_ticket_for(second)
    client.force_login(staff_in(AGENT))

    response = client.post(reverse("admin:orders_order_changelist"),
                           {"action": "bulk_open_tickets", "_selected_action": [first.pk, second.pk]})

    assert response.status_code == 302
    assert Ticket.objects.filter(order=first).count() == 1
    assert Ticket.objects.filter(order=second).count() == 1
    assert "1 ticket opened; 1 order already had one." in messages_of(response)


def test_an_escalation_event_shows_the_priorities_by_their_labels():
    ticket = open_ticket_for(priority=TicketPriority.NORMAL)
    services.change_priority(ticket=ticket, to=TicketPriority.HIGH, actor=SYSTEM)
    event = TicketEvent.objects.get(ticket=ticket, kind=Kind.PRIORITY_CHANGED)
    escalation = TicketEvent(ticket=ticket, kind=Kind.ESCALATED, from_value="normal", to_value="high")
    created = TicketEvent.objects.get(ticket=ticket, kind=Kind.CREATED)

    assert (event.value_label(event.from_value), event.value_label(event.to_value)) == ("normal", "high")
    assert (escalation.value_label("normal"), escalation.value_label("urgent")) == ("normal", "urgent")
    assert created.value_label(created.to_value) == str(TicketStatus.NEW.label)
    with translation.override("zh-hans"):
        assert escalation.value_label("urgent") == str(TicketPriority.URGENT.label) != "urgent"


def test_the_database_refuses_a_ticket_event_by_an_unknown_kind_of_actor():
    ticket = open_ticket_for()

    with pytest.raises(IntegrityError), transaction.atomic():
        TicketEvent.objects.create(ticket=ticket, kind=TicketEvent.Kind.ESCALATED, actor_kind="robot")
