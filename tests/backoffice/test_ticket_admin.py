"""Support tickets in the staff admin (backoffice/ticket_admin.py): the queues, a constant number
of queries on the list, the ticket page, and the POST endpoints that change a ticket through
`support.services` with permission checks, CSRF and Post/Redirect/Get."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backoffice.worklist import clear_worklist_choices
from orders.actors import Actor
from support import services
from support.models import MessageVisibility, Ticket, TicketEvent, TicketMessage
from tests.backoffice.factories import messages_of
from tests.orders.factories import MerchantFactory, OrderFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/support/ticket/"
SETUP = Actor.system("test setup")


def staff_with_support_perms(*codenames: str, **kwargs):
    """A staff user holding only the given `support` permissions (plus reading orders)."""
    user = StaffUserFactory(**kwargs)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="support", codename__in=codenames)
        | Permission.objects.filter(content_type__app_label="orders", codename="view_order")
    )
    return user


@pytest.fixture
def agent(client):
    user = staff_with_support_perms("view_ticket", "change_ticket", "reply_ticket", username="ticket-agent")
    client.force_login(user)
    return user


def ticket_for(order=None, **kwargs) -> Ticket:
    order = order or OrderFactory()
    kwargs.setdefault("subject", f"Where is {order.reference}?")
    kwargs.setdefault("source", "customer")
    return services.open_ticket(order=order, actor=SETUP, **kwargs)


def url(ticket: Ticket, action: str = "change") -> str:
    return reverse(f"admin:support_ticket_{action}", args=[ticket.pk])


def listed(client, query: str = "") -> set[int]:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return {ticket.pk for ticket in response.context["cl"].result_list}


# --- queues ----------------------------------------------------------------------------------


def test_the_mine_queue_lists_the_tickets_assigned_to_me(client, agent):
    mine = ticket_for(assignee=agent)
    ticket_for(assignee=StaffUserFactory())
    ticket_for()
    assert listed(client, "?queue=mine") == {mine.pk}


def test_the_unassigned_queue_lists_tickets_without_assignee(client, agent):
    ticket_for(assignee=agent)
    nobody = ticket_for()
    assert listed(client, "?queue=unassigned") == {nobody.pk}


def test_the_mine_and_unassigned_queues_leave_out_closed_tickets(client, agent):
    open_mine, closed_mine = ticket_for(assignee=agent), ticket_for(assignee=agent)
    open_nobody, closed_nobody = ticket_for(), ticket_for()
    for ticket in (closed_mine, closed_nobody):
        services.change_status(ticket=ticket, to="resolved", actor=SETUP)
        services.change_status(ticket=ticket, to="closed", actor=SETUP)

    assert listed(client, "?queue=mine") == {open_mine.pk}
    assert listed(client, "?queue=unassigned") == {open_nobody.pk}


def test_the_due_soon_queue_lists_open_running_tickets_due_within_an_hour(client, agent):
    now = timezone.now()
    first_response_soon = ticket_for()
    resolution_overdue = ticket_for()
    later = ticket_for()
    paused = ticket_for()
    done = ticket_for()
    Ticket.objects.filter(pk__in=[first_response_soon.pk, paused.pk, done.pk]).update(
        first_response_due_at=now + timedelta(minutes=30))
    Ticket.objects.filter(pk=resolution_overdue.pk).update(resolution_due_at=now - timedelta(minutes=5))
    Ticket.objects.filter(pk=later.pk).update(first_response_due_at=now + timedelta(hours=3),
                                              resolution_due_at=now + timedelta(days=1))
    Ticket.objects.filter(pk=paused.pk).update(sla_paused_at=now)
    Ticket.objects.filter(pk=done.pk).update(status=Ticket.Status.CLOSED)
    assert listed(client, "?queue=due_soon") == {first_response_soon.pk, resolution_overdue.pk}


def test_an_answered_ticket_is_not_due_soon_for_its_first_response(client, agent):
    ticket = ticket_for()
    Ticket.objects.filter(pk=ticket.pk).update(first_response_due_at=timezone.now() + timedelta(minutes=10),
                                               first_responded_at=timezone.now())
    assert listed(client, "?queue=due_soon") == set()


def test_the_escalated_queue_lists_escalated_tickets(client, agent):
    escalated = ticket_for()
    services.change_status(ticket=escalated, to="escalated", actor=SETUP, reason="outage")
    ticket_for()
    assert listed(client, "?queue=escalated") == {escalated.pk}


def test_search_finds_a_ticket_by_number_order_reference_or_customer_email(client, agent):
    by_number = ticket_for()
    by_reference = ticket_for(order=OrderFactory(reference="ORD-FIND-ME"))
    by_email = ticket_for(order=OrderFactory(customer_email="find.me@example.com"))
    assert listed(client, f"?q=%23{by_number.pk}") == {by_number.pk}
    assert listed(client, "?q=ORD-FIND-ME") == {by_reference.pk}
    assert listed(client, "?q=find.me@example.com") == {by_email.pk}


def test_the_list_links_the_order_page(client, agent):
    ticket = ticket_for()
    response = client.get(CHANGELIST)
    assert reverse("admin:orders_order_change", args=[ticket.order_id]) in response.content.decode()


def _warm(client) -> None:
    clear_worklist_choices()
    client.get(CHANGELIST)  # memoises the merchant choices and touches the session


def test_the_changelist_runs_a_constant_number_of_queries(client, agent, django_assert_num_queries,
                                                          django_assert_max_num_queries):
    ticket_for(assignee=agent)
    _warm(client)
    with django_assert_max_num_queries(50) as captured:
        client.get(CHANGELIST)
    one_ticket = len(captured)  # now: the next request clears the connection's query log
    for _ in range(12):
        ticket_for(order=OrderFactory(merchant=MerchantFactory()), assignee=StaffUserFactory())
    _warm(client)
    with django_assert_num_queries(one_ticket):
        response = client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 13


# --- the ticket page -------------------------------------------------------------------------


def test_the_ticket_page_shows_the_conversation_oldest_first(client, agent):
    ticket = ticket_for(body="I paid but nothing happened.", visibility="public")
    services.add_message(ticket=ticket, body="Checked the provider.", visibility="internal", actor=SETUP)
    html = client.get(url(ticket)).content.decode()
    assert "I paid but nothing happened." in html and "Checked the provider." in html
    assert html.index("I paid but nothing happened.") < html.index("Checked the provider.")
    assert "visibility-internal" in html and "visibility-public" in html


def test_the_ticket_page_shows_the_orders_diagnosis_and_timeline(client, agent):
    ticket = ticket_for()
    response = client.get(url(ticket))
    html = response.content.decode()
    assert 'id="diagnosis"' in html
    assert 'id="timeline"' in html
    assert "diagnosis" in response.context and response.context["timeline"]
    assert str(response.context["timeline"][-1].title) in html  # the order's first event


def test_the_ticket_page_shows_the_ticket_history(client, agent):
    ticket = ticket_for()
    services.change_priority(ticket=ticket, to="urgent", actor=SETUP, reason="VIP customer")
    html = client.get(url(ticket)).content.decode()
    assert 'id="history"' in html and "VIP customer" in html


def test_the_ticket_page_offers_saved_replies_of_the_tickets_category(client, agent):
    from support.models import SavedReply

    ticket = ticket_for(category="result_unknown")
    SavedReply.objects.create(title="Checking with the bank", category="result_unknown", body="We are checking.")
    SavedReply.objects.create(title="Declined card", category="payment_declined", body="Try another card.")
    html = client.get(url(ticket)).content.decode()
    assert "Checking with the bank" in html and "Declined card" not in html


def test_a_saved_reply_fills_the_textarea_without_script(client, agent):
    from support.models import SavedReply

    ticket = ticket_for()
    saved = SavedReply.objects.create(title="Thanks", body="Thank you for your patience.")
    response = client.get(url(ticket) + f"?saved_reply={saved.pk}")
    assert response.context["reply_form"].initial["body"] == "Thank you for your patience."


def test_the_change_form_cannot_be_posted(client, agent):
    ticket = ticket_for()
    response = client.post(url(ticket), {"subject": "changed", "status": "closed"})
    assert response.status_code == 405
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.NEW


# --- changes through the services ------------------------------------------------------------


def test_a_public_reply_is_stored_public_and_redirects_back(client, agent):
    ticket = ticket_for()
    response = client.post(url(ticket, "reply"), {"body": "We are on it.", "visibility": "public"})
    assert response.status_code == 302 and response.url.startswith(url(ticket))
    message = TicketMessage.objects.get(ticket=ticket, body="We are on it.")
    assert message.visibility == MessageVisibility.PUBLIC and message.author_user == agent


def test_an_internal_note_is_stored_internal(client, agent):
    ticket = ticket_for()
    client.post(url(ticket, "reply"), {"body": "Provider is slow today.", "visibility": "internal"})
    assert TicketMessage.objects.get(ticket=ticket, body="Provider is slow today.").visibility == "internal"


def test_an_empty_reply_is_refused_with_a_message(client, agent):
    ticket = ticket_for()
    response = client.post(url(ticket, "reply"), {"body": "", "visibility": "public"}, follow=True)
    assert not TicketMessage.objects.filter(ticket=ticket).exists()
    assert messages_of(response)


def test_a_status_change_goes_through_the_service_and_records_an_event(client, agent):
    ticket = ticket_for()
    response = client.post(url(ticket, "status"), {"status": "escalated", "reason": "outage"})
    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.ESCALATED
    event = TicketEvent.objects.filter(ticket=ticket, kind="status_changed").latest("id")
    assert (event.to_value, event.actor_user, event.message) == ("escalated", agent, "outage")


def test_a_refused_status_change_shows_the_services_message(client, agent):
    ticket = ticket_for()
    response = client.post(url(ticket, "status"), {"status": "new"}, follow=True)
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.NEW
    assert any(messages_of(response))


def test_a_priority_change_goes_through_the_service_and_records_an_event(client, agent):
    ticket = ticket_for()
    client.post(url(ticket, "priority"), {"priority": "urgent", "reason": "VIP"})
    ticket.refresh_from_db()
    assert ticket.priority == "urgent"
    event = TicketEvent.objects.get(ticket=ticket, kind="priority_changed")
    assert (event.from_value, event.to_value, event.actor_user) == ("normal", "urgent", agent)


def test_assign_to_me_goes_through_the_service_and_records_an_event(client, agent):
    ticket = ticket_for()
    client.post(url(ticket, "assign"), {"to_me": "1"})
    ticket.refresh_from_db()
    assert ticket.assignee == agent
    assert TicketEvent.objects.filter(ticket=ticket, kind="assignee_changed", actor_user=agent).exists()


def test_assigning_someone_else_and_nobody(client, agent):
    ticket = ticket_for()
    other = StaffUserFactory(username="other-agent")
    client.post(url(ticket, "assign"), {"assignee": other.pk})
    ticket.refresh_from_db()
    assert ticket.assignee == other
    client.post(url(ticket, "assign"), {"assignee": ""})
    ticket.refresh_from_db()
    assert ticket.assignee is None


def test_opening_a_ticket_goes_through_the_service(client):
    user = staff_with_support_perms("view_ticket", "add_ticket", username="opener")
    client.force_login(user)
    order = OrderFactory()
    response = client.post(reverse("admin:support_ticket_add"), {
        "merchant": order.merchant_id, "order_reference": order.reference, "subject": "Customer called",
        "category": "other", "priority": "high", "body": "Called twice.", "visibility": "internal",
    })
    ticket = Ticket.objects.get(order=order)
    assert response.status_code == 302 and response.url == url(ticket)
    assert ticket.source == "staff" and ticket.priority == "high"
    assert TicketEvent.objects.filter(ticket=ticket, kind="created", actor_user=user).exists()


# --- permissions and CSRF --------------------------------------------------------------------


@pytest.mark.parametrize("action,data", [
    ("status", {"status": "open"}),
    ("priority", {"priority": "high"}),
    ("assign", {"to_me": "1"}),
])
def test_changing_a_ticket_needs_the_change_permission(client, action, data):
    client.force_login(staff_with_support_perms("view_ticket", "reply_ticket"))
    ticket = ticket_for()
    assert client.post(url(ticket, action), data).status_code == 403
    assert not TicketEvent.objects.filter(ticket=ticket).exclude(kind="created").exists()


def test_replying_needs_the_reply_permission(client):
    client.force_login(staff_with_support_perms("view_ticket", "change_ticket"))
    ticket = ticket_for()
    response = client.post(url(ticket, "reply"), {"body": "hello", "visibility": "public"})
    assert response.status_code == 403
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_the_page_hides_the_forms_a_user_may_not_use(client):
    client.force_login(staff_with_support_perms("view_ticket"))
    ticket = ticket_for()
    html = client.get(url(ticket)).content.decode()
    assert url(ticket, "reply") not in html and url(ticket, "status") not in html


def test_the_endpoints_accept_only_post(client, agent):
    ticket = ticket_for()
    assert client.get(url(ticket, "status")).status_code == 405


def test_a_post_without_a_csrf_token_is_refused(agent):
    ticket = ticket_for()
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    response = client.post(url(ticket, "reply"), {"body": "hello", "visibility": "internal"})
    assert response.status_code == 403
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_a_post_with_the_pages_csrf_token_is_accepted(agent):
    ticket = ticket_for()
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    page = client.get(url(ticket))
    token = page.cookies["csrftoken"].value
    response = client.post(url(ticket, "reply"), {"body": "hello", "visibility": "internal",
                                                  "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert TicketMessage.objects.filter(ticket=ticket, body="hello").exists()
