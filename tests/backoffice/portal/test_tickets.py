"""The portal's tickets: the list, opening one (one open ticket per order), the conversation
without internal notes, and replies to the customer or notes to our team."""

from __future__ import annotations

import pytest

from orders.actors import Actor
from orders.causes import Cause
from support.models import MessageVisibility, Ticket, TicketMessage, TicketSource, TicketStatus
from support.services import add_message, change_status, open_ticket
from tests.backoffice.portal.conftest import portal_url, queries_of
from tests.orders.engine_helpers import ENGINE_ACTOR, flag_order, pending_order
from tests.support.factories import replies  # noqa: F401

pytestmark = pytest.mark.django_db


def ticket_of(merchant, subject: str = "Customer asks", **kwargs) -> Ticket:
    order, _attempt = pending_order(merchant=merchant)
    return open_ticket(order=order, subject=subject, source=TicketSource.STAFF, actor=ENGINE_ACTOR, **kwargs)


# --- the list -----------------------------------------------------------------------------------


def test_the_list_shows_open_tickets_by_default_and_all_on_request(as_user, merchant, other_merchant, viewer):
    open_one = ticket_of(merchant, "Still open")
    done = ticket_of(merchant, "Already resolved")
    change_status(ticket=done, to=TicketStatus.RESOLVED, actor=ENGINE_ACTOR)
    ticket_of(other_merchant, "Someone else's")
    client = as_user(viewer)

    default = [t.pk for t in client.get(portal_url("tickets", merchant)).context["tickets_page"].object_list]
    everything = [t.pk for t in client.get(portal_url("tickets", merchant) + "?status=all")
                  .context["tickets_page"].object_list]

    assert default == [open_one.pk]
    assert everything == [done.pk, open_one.pk]


def test_the_ticket_list_runs_as_many_queries_for_20_tickets_as_for_2(as_user, merchant, viewer,
                                                                      django_assert_num_queries):
    client = as_user(viewer)
    for _ in range(2):
        ticket_of(merchant)
    expected = queries_of(lambda: client.get(portal_url("tickets", merchant)))
    for _ in range(18):
        ticket_of(merchant)
    with django_assert_num_queries(expected):
        response = client.get(portal_url("tickets", merchant))
    assert len(response.context["tickets_page"].object_list) == 20


# --- opening a ticket ------------------------------------------------------------------------------


def test_an_operator_opens_a_ticket_about_an_order(as_user, merchant, operator, replies):  # noqa: F811
    order, _attempt = pending_order(merchant=merchant, reference="JT-7001")
    response = as_user(operator).post(portal_url("ticket_new", merchant), {
        "order_reference": "JT-7001", "subject": "Paid but not confirmed", "category": "result_unknown",
        "priority": "high", "body": "The customer sent a bank statement.", "visibility": "merchant",
    })
    ticket = Ticket.objects.get()
    assert response.status_code == 302 and response["Location"] == portal_url("ticket", merchant, ticket_id=ticket.pk)
    assert (ticket.order_id, ticket.merchant_id, ticket.source, ticket.priority) == (
        order.pk, merchant.pk, TicketSource.MERCHANT, "high")
    message = ticket.messages.get()
    assert (message.visibility, message.author_user_id) == (MessageVisibility.MERCHANT, operator.pk)
    assert replies == []  # a note to our team is not emailed


def test_a_ticket_without_an_order_belongs_to_the_merchant(as_user, merchant, operator):
    as_user(operator).post(portal_url("ticket_new", merchant), {
        "subject": "Question about refunds", "category": "other", "priority": "normal", "body": "How long?",
        "visibility": "merchant"})
    ticket = Ticket.objects.get()
    assert ticket.order_id is None and ticket.merchant_id == merchant.pk


def test_a_message_to_the_customer_is_emailed(as_user, merchant, operator, replies):  # noqa: F811
    pending_order(merchant=merchant, reference="JT-7002")
    as_user(operator).post(portal_url("ticket_new", merchant), {
        "order_reference": "JT-7002", "subject": "Your order", "category": "other", "priority": "normal",
        "body": "We are checking your payment.", "visibility": "public"})
    assert [message.body for message in replies] == ["We are checking your payment."]


def test_the_new_ticket_form_is_prefilled_from_the_order(as_user, merchant, operator):
    order, _attempt = pending_order(merchant=merchant, reference="JT-7003")
    flag_order(order, Cause.RESULT_UNKNOWN)
    form = as_user(operator).get(portal_url("ticket_new", merchant) + f"?order={order.pk}").context["form"]
    assert form.initial == {"order_reference": "JT-7003", "subject": "Order JT-7003 unreturned: Payment result unknown",
                            "category": "result_unknown"}


def test_another_merchants_order_cannot_prefill_the_form(as_user, merchant, other_merchant, operator):
    theirs, _attempt = pending_order(merchant=other_merchant)
    assert as_user(operator).get(portal_url("ticket_new", merchant) + f"?order={theirs.pk}").status_code == 404


def test_an_order_with_an_open_ticket_links_it_instead_of_a_form(as_user, merchant, operator):
    existing = ticket_of(merchant, "Already being handled")
    response = as_user(operator).get(portal_url("ticket_new", merchant) + f"?order={existing.order_id}")
    body = response.content.decode()
    assert "already has an open ticket" in body
    assert portal_url("ticket", merchant, ticket_id=existing.pk) in body
    assert 'name="body"' not in body


def test_posting_a_second_ticket_for_an_order_points_to_the_open_one(as_user, merchant, operator):
    existing = ticket_of(merchant, "Already being handled")
    response = as_user(operator).post(portal_url("ticket_new", merchant), {
        "order_reference": existing.order.reference, "subject": "Again", "category": "other", "priority": "normal",
        "body": "Hello?", "visibility": "merchant"})
    assert response.status_code == 409
    assert portal_url("ticket", merchant, ticket_id=existing.pk) in response.content.decode()
    assert Ticket.objects.count() == 1


def test_an_unknown_order_reference_is_a_form_error(as_user, merchant, other_merchant, operator):
    theirs, _attempt = pending_order(merchant=other_merchant, reference="GLOBEX-1")
    response = as_user(operator).post(portal_url("ticket_new", merchant), {
        "order_reference": "GLOBEX-1", "subject": "x", "category": "other", "priority": "normal", "body": "x",
        "visibility": "merchant"})
    assert response.status_code == 400
    assert response.context["form"].errors["order_reference"] == ["You have no order with this reference."]
    assert not Ticket.objects.exists()


def test_an_internal_note_cannot_be_written_from_the_portal(as_user, merchant, operator):
    response = as_user(operator).post(portal_url("ticket_new", merchant), {
        "subject": "x", "category": "other", "priority": "normal", "body": "x", "visibility": "internal"})
    assert response.status_code == 400
    assert "visibility" in response.context["form"].errors
    assert not Ticket.objects.exists()


# --- the conversation ------------------------------------------------------------------------------


def test_the_conversation_never_shows_internal_notes(as_user, merchant, viewer):
    ticket = ticket_of(merchant, body="INTERNAL: the customer is a known fraud risk",
                       visibility=MessageVisibility.INTERNAL)
    add_message(ticket=ticket, body="PUBLIC: we are on it", visibility=MessageVisibility.PUBLIC, actor=ENGINE_ACTOR)
    add_message(ticket=ticket, body="MERCHANT: please confirm the address", visibility=MessageVisibility.MERCHANT,
                actor=ENGINE_ACTOR)

    body = as_user(viewer).get(portal_url("ticket", merchant, ticket_id=ticket.pk)).content.decode()

    assert "INTERNAL:" not in body
    assert "PUBLIC: we are on it" in body and "MERCHANT: please confirm the address" in body


def test_a_staff_member_who_is_also_a_member_sees_no_internal_notes_in_the_portal(as_user, merchant):
    from tests.orders.factories import MembershipFactory, StaffUserFactory

    staff = StaffUserFactory()
    MembershipFactory(user=staff, merchant=merchant)
    ticket = ticket_of(merchant, body="INTERNAL: staff eyes only", visibility=MessageVisibility.INTERNAL)
    body = as_user(staff).get(portal_url("ticket", merchant, ticket_id=ticket.pk)).content.decode()
    assert "INTERNAL: staff eyes only" not in body


def test_a_viewer_reads_without_a_reply_form(as_user, merchant, viewer):
    ticket = ticket_of(merchant)
    body = as_user(viewer).get(portal_url("ticket", merchant, ticket_id=ticket.pk)).content.decode()
    assert portal_url("ticket_reply", merchant, ticket_id=ticket.pk) not in body


def test_an_operator_writes_a_note_to_our_team(as_user, merchant, operator, replies):  # noqa: F811
    ticket = ticket_of(merchant)
    response = as_user(operator).post(portal_url("ticket_reply", merchant, ticket_id=ticket.pk),
                                      {"body": "The customer called us.", "visibility": "merchant"}, follow=True)
    message = TicketMessage.objects.get(ticket=ticket)
    assert (message.visibility, message.author_user_id, message.body) == (
        MessageVisibility.MERCHANT, operator.pk, "The customer called us.")
    assert "Your note is sent to our support team." in response.content.decode()
    assert replies == []


def test_an_operator_replies_to_the_customer_by_email(as_user, merchant, operator, replies):  # noqa: F811
    ticket = ticket_of(merchant)
    as_user(operator).post(portal_url("ticket_reply", merchant, ticket_id=ticket.pk),
                           {"body": "Your order is on its way.", "visibility": "public"})
    assert [message.body for message in replies] == ["Your order is on its way."]
    assert Ticket.objects.get(pk=ticket.pk).first_responded_at is not None


def test_an_empty_reply_changes_nothing(as_user, merchant, operator):
    ticket = ticket_of(merchant)
    response = as_user(operator).post(portal_url("ticket_reply", merchant, ticket_id=ticket.pk),
                                      {"body": "   ", "visibility": "public"})
    assert response.status_code == 400
    assert response.context["form"].errors["body"]
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_a_reply_as_internal_note_is_refused(as_user, merchant, operator):
    ticket = ticket_of(merchant)
    response = as_user(operator).post(portal_url("ticket_reply", merchant, ticket_id=ticket.pk),
                                      {"body": "sneaky", "visibility": "internal"})
    assert response.status_code == 400
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_a_reply_to_a_ticket_waiting_on_the_merchant_reopens_it(as_user, merchant, operator):
    ticket = ticket_of(merchant)
    change_status(ticket=ticket, to=TicketStatus.WAITING_ON_MERCHANT, actor=Actor.system("test"))
    as_user(operator).post(portal_url("ticket_reply", merchant, ticket_id=ticket.pk),
                           {"body": "Here is the address.", "visibility": "merchant"})
    assert Ticket.objects.get(pk=ticket.pk).status == TicketStatus.OPEN
