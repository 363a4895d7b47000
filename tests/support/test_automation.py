"""Tickets follow their orders: opened for unreturned orders, resolved with a plain-words
reply when the order is sorted, reopened when it is unreturned again; on the order timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from orders import services as order_services
from orders.causes import Cause
from orders.models import Order
from orders.schedules import SCHEDULES
from orders.states import OrderStatus
from orders.timeline import order_timeline
from support import services
from support.models import Ticket, TicketEvent, TicketPriority, TicketSource, TicketStatus
from tests.orders.engine_helpers import fresh, pending_order
from tests.orders.factories import MerchantFactory
from tests.support.factories import AGENT, SYSTEM, open_ticket_for, replies, staff_in, stuck_order  # noqa: F401

pytestmark = pytest.mark.django_db

Status = TicketStatus


# --- ticket_for_stuck_order ---------------------------------------------------------------------------


def test_an_unreturned_order_gets_an_automatic_ticket_with_its_cause():
    order = stuck_order(Cause.RESULT_UNKNOWN)

    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    assert (ticket.source, ticket.category, ticket.priority) == (
        TicketSource.AUTO, Cause.RESULT_UNKNOWN, TicketPriority.NORMAL)
    assert ticket.subject == f"Order {order.reference} unreturned: Payment result unknown"


def test_the_automatic_ticket_carries_the_diagnosis_as_an_internal_note():
    order = stuck_order(Cause.RESULT_UNKNOWN)

    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    [note] = ticket.messages.all()
    assert note.visibility == "internal"
    assert "Recommended action:" in note.body
    attempt = order.attempts.get()
    assert f"- #{attempt.pk} at {attempt.provider}: " in note.body  # the attempts in plain words
    assert "{'" not in note.body  # never a raw dump of the evidence


@pytest.mark.parametrize(("cause", "needs_review"), [(Cause.AMOUNT_MISMATCH, False), (Cause.RESULT_UNKNOWN, True)])
def test_money_causes_and_reviews_get_a_high_priority(cause, needs_review):
    order = stuck_order(cause, needs_review=needs_review)

    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    assert ticket.priority == TicketPriority.HIGH


def test_the_automatic_ticket_goes_to_the_orders_assignee():
    order = stuck_order()
    owner = staff_in(AGENT)
    order_services.assign_order(order=order, assignee=owner, actor=SYSTEM)

    assert services.ticket_for_stuck_order(order=order, actor=SYSTEM).assignee_id == owner.pk


def test_the_automatic_ticket_goes_to_the_least_busy_active_agent():
    busy, idle = staff_in(AGENT), staff_in(AGENT)
    staff_in(AGENT, is_active=False)
    open_ticket_for(assignee=busy)

    assert services.ticket_for_stuck_order(order=stuck_order(), actor=SYSTEM).assignee_id == idle.pk


def test_ticket_for_stuck_order_is_idempotent():
    order = stuck_order()

    first = services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    second = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    assert first.pk == second.pk
    assert Ticket.objects.filter(order=order).count() == 1


def test_ticket_for_stuck_order_reopens_the_latest_resolved_ticket():
    order = stuck_order()
    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    again = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    assert again.pk == ticket.pk
    assert (fresh(ticket).status, fresh(ticket).reopened_count) == (Status.OPEN, 1)


# --- open_tickets_for_stuck_orders -------------------------------------------------------------------


def test_orders_unreturned_past_escalate_after_get_tickets():
    merchant = MerchantFactory(escalate_after=timedelta(hours=2))
    old = stuck_order(merchant=merchant)
    young = stuck_order(merchant=merchant)
    Order.objects.filter(pk=old.pk).update(stuck_since=timezone.now() - timedelta(hours=3))

    assert services.open_tickets_for_stuck_orders() == 1
    assert Ticket.objects.filter(order=old).count() == 1
    assert not Ticket.objects.filter(order=young).exists()


def test_orders_needing_review_get_tickets_at_once():
    order = stuck_order(needs_review=True)

    assert services.open_tickets_for_stuck_orders() == 1
    assert Ticket.objects.filter(order=order, status=Status.NEW).count() == 1


def test_orders_with_an_open_ticket_are_left_alone():
    order = stuck_order(needs_review=True)
    open_ticket_for(order)

    assert services.open_tickets_for_stuck_orders() == 0


def test_an_order_whose_ticket_a_person_resolved_during_this_spell_is_left_alone():
    order = stuck_order(needs_review=True)
    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    assert services.open_tickets_for_stuck_orders() == 0
    assert fresh(ticket).status == Status.RESOLVED


def test_finding_no_candidates_is_one_query(django_assert_max_num_queries):
    stuck_order(needs_review=False)  # young: not a candidate

    with django_assert_max_num_queries(1):
        assert services.open_tickets_for_stuck_orders() == 0


# --- tickets follow their orders (order_state_changed) -----------------------------------------------


def test_a_sorted_order_resolves_its_ticket_with_a_plain_words_reply(
        django_capture_on_commit_callbacks, replies):  # noqa: F811
    order = stuck_order()
    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    with django_capture_on_commit_callbacks(execute=True):
        order_services.staff_cancel_order(order=order, reason="customer asked", actor=SYSTEM)

    ticket = fresh(ticket)
    assert ticket.status == Status.RESOLVED
    reply = ticket.messages.filter(visibility="public").get()
    assert reply.body == f"Your order {order.reference} is now {OrderStatus.CANCELLED.label}."
    assert replies == []  # the cancellation has its own email: the customer is told once


def test_resolving_an_order_ticket_twice_emails_once(replies):  # noqa: F811
    order = stuck_order()
    services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    # No longer unreturned without a status of its own to email about (the sweep unflagged it).
    Order.objects.filter(pk=order.pk).update(stuck_since=None, stuck_cause="", stuck_category="", needs_review=False,
                                             resolved_at=timezone.now())

    services.resolve_order_ticket(order_id=order.pk, actor=SYSTEM)
    assert services.resolve_order_ticket(order_id=order.pk, actor=SYSTEM) is None

    assert len(replies) == 1


def test_a_customer_whose_stuck_order_is_cancelled_gets_one_email(django_capture_on_commit_callbacks):
    from support.models import Notification

    order = stuck_order()
    services.ticket_for_stuck_order(order=order, actor=SYSTEM)

    with django_capture_on_commit_callbacks(execute=True):
        order_services.staff_cancel_order(order=order, reason="customer asked", actor=SYSTEM)

    assert fresh(order.tickets.get()).status == Status.RESOLVED
    assert list(Notification.objects.filter(order=order).values_list("kind", flat=True)) == ["order_cancelled"]


def test_an_order_unreturned_again_reopens_its_resolved_ticket(django_capture_on_commit_callbacks, replies):  # noqa: F811
    from tests.orders.engine_helpers import flag_order

    order = stuck_order()
    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        order_services.staff_cancel_order(order=order, reason="customer asked", actor=SYSTEM)

    with django_capture_on_commit_callbacks(execute=True):
        flag_order(order, Cause.DUPLICATE_PAYMENT, needs_review=True)
    assert services.open_tickets_for_stuck_orders() == 1

    ticket = fresh(ticket)
    assert (ticket.status, ticket.reopened_count) == (Status.OPEN, 1)


def test_an_order_unreturned_again_but_not_yet_due_waits_for_the_periodic_pass(
        django_capture_on_commit_callbacks, replies):  # noqa: F811
    from tests.orders.engine_helpers import flag_order

    order, _attempt = pending_order()
    ticket = open_ticket_for(order)
    services.change_status(ticket=ticket, to=Status.RESOLVED, actor=SYSTEM)

    with django_capture_on_commit_callbacks(execute=True):
        flag_order(order, Cause.RESULT_UNKNOWN)

    assert fresh(ticket).status == Status.RESOLVED
    with time_machine.travel(timezone.now() + timedelta(hours=3), tick=False):
        assert services.open_tickets_for_stuck_orders() == 1
    assert fresh(ticket).status == Status.OPEN


def test_an_order_the_sweep_unflags_has_its_ticket_resolved_by_the_periodic_pass(
        django_capture_on_commit_callbacks, replies):  # noqa: F811
    from orders.sweep import sweep_unreturned

    order = stuck_order()
    ticket = services.ticket_for_stuck_order(order=order, actor=SYSTEM)
    # The customer finishes paying: the order is no longer unreturned, by the sweep alone.
    Order.objects.filter(pk=order.pk).update(status_changed_at=timezone.now(), sweep_due_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        sweep_unreturned()
    assert fresh(order).stuck_since is None
    assert fresh(ticket).status != Status.RESOLVED  # the flag-only change queued nothing

    assert services.resolve_tickets_of_returned_orders(actor=SYSTEM) == 1

    ticket = fresh(ticket)
    assert ticket.status == Status.RESOLVED
    assert len(replies) == 1


def test_a_ticket_on_an_order_that_was_not_unreturned_since_stays_open(replies):  # noqa: F811
    order, _attempt = pending_order()
    ticket = open_ticket_for(order)

    assert services.resolve_tickets_of_returned_orders(actor=SYSTEM) == 0
    assert fresh(ticket).is_open


def test_a_flag_only_change_costs_the_ticket_receiver_no_query(django_assert_num_queries):
    from orders.signals import order_state_changed

    with django_assert_num_queries(0):
        order_state_changed.send(
            sender=Order, order_id=1, old_status=OrderStatus.PAYMENT_PENDING, new_status=OrderStatus.PAYMENT_PENDING,
            was_unreturned=True, is_unreturned=False, cause="", actor_kind="system",
        )


# --- the order timeline and the schedules ------------------------------------------------------------


def test_ticket_messages_and_events_appear_on_the_order_timeline(replies):  # noqa: F811
    order, _attempt = pending_order()
    ticket = open_ticket_for(order, body="Checked with the bank.")
    services.add_message(ticket=ticket, body="We are on it.", visibility="public", actor=SYSTEM)

    entries = [e for e in order_timeline(order) if e.kind.startswith("ticket_")]
    public = [e for e in order_timeline(order, include_internal=False) if e.kind.startswith("ticket_")]

    assert {e.body for e in entries if e.kind == "ticket_message"} == {"Checked with the bank.", "We are on it."}
    assert any(e.kind == "ticket_event" and e.data["kind"] == TicketEvent.Kind.CREATED for e in entries)
    assert [e.body for e in public] == ["We are on it."]


def test_the_support_schedules_are_registered():
    names = {spec["name"]: spec["func"] for spec in SCHEDULES}

    assert names["escalate-tickets"] == "support.tasks.escalate_tickets"
    assert names["open-tickets-for-stuck-orders"] == "support.tasks.open_tickets_for_stuck_orders_task"
    assert names["resolve-tickets-of-returned-orders"] == "support.tasks.resolve_tickets_of_returned_orders_task"


def test_the_tasks_take_ids_and_call_the_services(replies):  # noqa: F811
    from support import tasks

    order = stuck_order(needs_review=True)

    assert tasks.open_tickets_for_stuck_orders_task() == "opened=1"
    assert tasks.escalate_tickets() == "escalated=0"
    assert tasks.resolve_order_ticket_task(order.pk) == "nothing to resolve"  # still unreturned


def test_a_pass_detects_provider_outages_once_for_all_its_tickets(monkeypatch):
    import orders.evidence

    calls = []
    real = orders.evidence.detect_outage_providers
    monkeypatch.setattr(orders.evidence, "detect_outage_providers", lambda **kw: calls.append(kw) or real(**kw))
    monkeypatch.setattr(services, "detect_outage_providers", lambda **kw: calls.append(kw) or real(**kw))
    for _ in range(3):
        stuck_order(needs_review=True)

    assert services.open_tickets_for_stuck_orders() == 3
    assert len(calls) == 1
