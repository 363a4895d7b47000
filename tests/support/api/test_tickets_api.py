"""The REST API's tickets endpoints: scoping, roles, visibilities, services, query counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders.actors import Actor
from orders.models import MerchantMembership
from support import services
from support.models import MessageVisibility, Notification, Ticket, TicketMessage, TicketSource, TicketStatus
from tests.orders.api.helpers import client_for, member, staff_with
from tests.orders.engine_helpers import new_order
from tests.orders.factories import MembershipFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
Role = MerchantMembership.Role
TICKETS = "/api/v1/tickets/"
SYSTEM = Actor.system("api test")
Visibility = MessageVisibility


def staff(*codenames: str):
    return staff_with("support", *codenames)


def ticket_for(merchant, *, order=True, **kwargs) -> Ticket:
    kwargs.setdefault("subject", "Where is my receipt?")
    kwargs.setdefault("source", TicketSource.STAFF)
    if order:
        kwargs["order"] = new_order(merchant=merchant)
    else:
        kwargs["merchant"] = merchant
    return services.open_ticket(actor=SYSTEM, **kwargs)


def note(ticket, visibility, body="a note", actor=SYSTEM) -> TicketMessage:
    return services.add_message(ticket=ticket, body=body, visibility=visibility, actor=actor)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# --- list and retrieve ---------------------------------------------------------------------------


def test_list_shows_only_the_users_merchants_tickets(merchant, other_merchant):
    mine = ticket_for(merchant)
    ticket_for(other_merchant)
    assert ids(client_for(member(merchant, Role.VIEWER)).get(TICKETS)) == [mine.pk]


def test_staff_see_every_merchants_tickets(merchant, other_merchant):
    expected = {ticket_for(merchant).pk, ticket_for(other_merchant, order=False).pk}
    assert set(ids(client_for(StaffUserFactory()).get(TICKETS))) == expected


def test_list_is_newest_first_with_its_fields(merchant):
    older = ticket_for(merchant)
    Ticket.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=1))
    newer = ticket_for(merchant, category="result_unknown")
    note(newer, Visibility.PUBLIC)
    note(newer, Visibility.INTERNAL)
    rows = client_for(member(merchant, Role.VIEWER)).get(TICKETS).json()["results"]
    assert [row["id"] for row in rows] == [newer.pk, older.pk]
    row = rows[0]
    assert row["merchant"] == "acme"
    assert (row["order"], row["order_reference"]) == (newer.order_id, newer.order.reference)
    assert (row["category"], row["category_label"]) == ("result_unknown", "Payment result unknown")
    assert (row["status"], row["status_label"]) == ("new", "new")
    assert row["message_count"] == 1  # the internal note is not the merchant user's
    assert row["first_response_due_at"] and row["resolution_due_at"] and row["resolved_at"] is None


def test_staff_message_count_includes_internal_notes(merchant):
    ticket = ticket_for(merchant)
    note(ticket, Visibility.PUBLIC)
    note(ticket, Visibility.INTERNAL)
    assert client_for(StaffUserFactory()).get(TICKETS).json()["results"][0]["message_count"] == 2


def test_retrieve_with_its_visible_messages(merchant):
    ticket = ticket_for(merchant)
    public = note(ticket, Visibility.PUBLIC, "we are on it")
    merchant_note = note(ticket, Visibility.MERCHANT, "please check your bank")
    note(ticket, Visibility.INTERNAL, "provider is flaky")
    body = client_for(member(merchant, Role.VIEWER)).get(f"{TICKETS}{ticket.pk}/").json()
    assert body["id"] == ticket.pk
    assert [m["id"] for m in body["messages"]] == [public.pk, merchant_note.pk]
    assert body["messages"][0]["author"] == "system"


def test_retrieve_another_merchants_ticket_answers_404(merchant, other_merchant):
    theirs = ticket_for(other_merchant)
    response = client_for(member(merchant)).get(f"{TICKETS}{theirs.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_id_beyond_any_ticket_answers_404(merchant):
    client = client_for(member(merchant))
    assert client.get(f"{TICKETS}{2**70}/").status_code == 404
    assert client.get(f"{TICKETS}{2**70}/messages/").status_code == 404




def test_anonymous_requests_answer_401_in_the_error_shape():
    response = APIClient().get(TICKETS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_token_authentication_works(merchant):
    token = Token.objects.create(user=member(merchant))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(TICKETS).status_code == 200


# --- filters -------------------------------------------------------------------------------------


def test_filter_status_and_open(merchant):
    fresh = ticket_for(merchant)
    waiting = ticket_for(merchant)
    services.change_status(ticket=waiting, to=TicketStatus.WAITING_ON_CUSTOMER, actor=SYSTEM)
    done = ticket_for(merchant)
    services.change_status(ticket=done, to=TicketStatus.RESOLVED, actor=SYSTEM)
    client = client_for(member(merchant))
    assert set(ids(client.get(TICKETS, {"status": ["new", "waiting_on_customer"]}))) == {fresh.pk, waiting.pk}
    assert set(ids(client.get(TICKETS, {"open": "true"}))) == {fresh.pk, waiting.pk}
    assert ids(client.get(TICKETS, {"open": "false"})) == [done.pk]


def test_filter_priority_category_order_and_dates(merchant):
    urgent = ticket_for(merchant, priority="urgent", category="callback_lost")
    other = ticket_for(merchant)
    Ticket.objects.filter(pk=other.pk).update(created_at=timezone.now() - timedelta(days=2))
    client = client_for(member(merchant))
    assert ids(client.get(TICKETS, {"priority": "urgent"})) == [urgent.pk]
    assert ids(client.get(TICKETS, {"category": "callback_lost"})) == [urgent.pk]
    assert ids(client.get(TICKETS, {"order": other.order_id})) == [other.pk]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(client.get(TICKETS, {"created_after": since})) == [urgent.pk]
    assert ids(client.get(TICKETS, {"created_before": since})) == [other.pk]


def test_filter_merchant_code_cannot_reach_another_merchant(merchant, other_merchant):
    ticket_for(other_merchant)
    assert ids(client_for(member(merchant)).get(TICKETS, {"merchant": "globex"})) == []
    assert len(ids(client_for(StaffUserFactory()).get(TICKETS, {"merchant": "globex"}))) == 1


@pytest.mark.parametrize("params", [
    {"status": "nope"}, {"open": "maybe"}, {"priority": "asap"}, {"order": "x"}, {"order": "0"},
    {"order": str(2**70)}, {"created_after": "yesterday"}, {"cursor": "not-a-cursor"},
])
def test_invalid_filter_value_answers_400_in_the_shape(merchant, params):
    response = client_for(member(merchant)).get(TICKETS, params)
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(params)


# --- query counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("user_kind", ["staff", "merchant"])
def test_list_query_count_does_not_grow_with_tickets(merchant, other_merchant, django_assert_num_queries, user_kind):
    user = StaffUserFactory() if user_kind == "staff" else member(merchant)
    client = client_for(user)
    ticket_for(other_merchant)

    def add_tickets(n: int) -> None:
        for i in range(n):
            ticket = ticket_for(merchant, order=bool(i % 2))
            note(ticket, Visibility.PUBLIC)
            note(ticket, Visibility.INTERNAL)

    add_tickets(2)
    with CaptureQueriesContext(connection) as two:
        client.get(TICKETS)
    assert len(two) == 1  # the page, its merchants, orders and message counts in one query
    add_tickets(18)
    with django_assert_num_queries(len(two)):
        response = client.get(TICKETS)
    assert len(response.json()["results"]) == (21 if user_kind == "staff" else 20)


@pytest.mark.parametrize("user_kind", ["staff", "merchant"])
def test_messages_query_count_does_not_grow_with_messages(merchant, django_assert_num_queries, user_kind):
    user = StaffUserFactory() if user_kind == "staff" else member(merchant)
    client = client_for(user)
    ticket = ticket_for(merchant)
    authors = [SYSTEM, Actor.staff(StaffUserFactory()), Actor.merchant(member(merchant)), Actor.customer("c@x.org")]
    url = f"{TICKETS}{ticket.pk}/messages/"

    def add_messages(n: int) -> None:
        for i in range(n):
            note(ticket, Visibility.PUBLIC, actor=authors[i % len(authors)])

    add_messages(2)
    with CaptureQueriesContext(connection) as two:
        client.get(url)
    add_messages(18)
    with django_assert_num_queries(len(two)):
        response = client.get(url)
    assert len(response.json()) == 20


# --- create ---------------------------------------------------------------------------------------


def test_operator_opens_a_ticket_for_their_order(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant)).post(
        TICKETS, {"order": order.pk, "subject": "Paid twice?", "category": "duplicate_payment", "priority": "high",
                  "message": "The customer shows two bank debits."}, format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    ticket = Ticket.objects.get(pk=body["id"])
    assert (ticket.order, ticket.merchant, ticket.priority) == (order, merchant, "high")
    assert ticket.source == TicketSource.API
    assert response["Location"].endswith(f"/api/v1/tickets/{ticket.pk}/")
    assert [(m["visibility"], m["author_kind"]) for m in body["messages"]] == [("merchant", "merchant")]
    assert body["message_count"] == 1
    assert not Notification.objects.exists()  # a merchant note is never emailed


def test_create_for_another_merchants_order_is_a_field_error(merchant, other_merchant):
    theirs = new_order(merchant=other_merchant)
    response = client_for(member(merchant)).post(TICKETS, {"order": theirs.pk, "subject": "x"}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert fields == {"order": ["No such order among yours."]}
    assert not Ticket.objects.exists()


def test_create_without_order_for_the_users_only_merchant(merchant):
    response = client_for(member(merchant)).post(TICKETS, {"subject": "Settlement report missing"}, format="json")
    assert response.status_code == 201
    assert (response.json()["merchant"], response.json()["order"]) == ("acme", None)


def test_create_without_order_needs_the_merchant_for_several(merchant, other_merchant):
    user = member(merchant)
    MembershipFactory(user=user, merchant=other_merchant, role=Role.OPERATOR)
    client = client_for(user)
    response = client.post(TICKETS, {"subject": "x"}, format="json")
    assert response.status_code == 400
    assert "merchant" in response.json()["error"]["fields"]
    assert client.post(TICKETS, {"subject": "x", "merchant": "globex"}, format="json").json()["merchant"] == "globex"


def test_create_for_another_merchants_code_is_a_field_error(merchant, other_merchant):
    response = client_for(member(merchant)).post(TICKETS, {"subject": "x", "merchant": "globex"}, format="json")
    assert response.status_code == 400
    assert "merchant" in response.json()["error"]["fields"]
    assert not Ticket.objects.exists()


def test_viewer_cannot_open_a_ticket(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant, Role.VIEWER)).post(TICKETS, {"order": order.pk, "subject": "x"},
                                                               format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not Ticket.objects.exists()


def test_viewer_of_the_orders_merchant_cannot_open_a_ticket_for_it(merchant, other_merchant):
    user = member(merchant, Role.OPERATOR)
    MembershipFactory(user=user, merchant=other_merchant, role=Role.VIEWER)
    order = new_order(merchant=other_merchant)
    response = client_for(user).post(TICKETS, {"order": order.pk, "subject": "x"}, format="json")
    assert response.status_code == 403


def test_duplicate_open_ticket_answers_409_with_existing_id(merchant):
    existing = ticket_for(merchant)
    response = client_for(member(merchant)).post(TICKETS, {"order": existing.order_id, "subject": "again"},
                                                 format="json")
    assert response.status_code == 409
    body = response.json()
    assert (body["error"]["code"], body["existing_id"]) == ("ticket_already_open", existing.pk)
    assert Ticket.objects.count() == 1


def test_idempotent_create_replays_the_first_answer(merchant):
    order = new_order(merchant=merchant)
    client = client_for(member(merchant))
    payload = {"order": order.pk, "subject": "Customer waits", "message": "please look"}
    first = client.post(TICKETS, payload, format="json", HTTP_IDEMPOTENCY_KEY="tk-1")
    again = client.post(TICKETS, payload, format="json", HTTP_IDEMPOTENCY_KEY="tk-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    assert Ticket.objects.count() == 1


def test_staff_need_add_ticket_and_name_the_merchant_without_order(merchant):
    assert client_for(staff()).post(TICKETS, {"subject": "x", "merchant": "acme"}, format="json").status_code == 403
    client = client_for(staff("add_ticket"))
    response = client.post(TICKETS, {"subject": "x"}, format="json")
    assert response.status_code == 400
    assert "merchant" in response.json()["error"]["fields"]
    response = client.post(TICKETS, {"subject": "x", "merchant": "acme", "message": "checking"}, format="json")
    assert response.status_code == 201
    assert response.json()["messages"][0]["visibility"] == "internal"  # staff default


def test_staff_open_for_any_merchants_order_with_a_public_first_message(other_merchant):
    order = new_order(merchant=other_merchant)
    response = client_for(staff("add_ticket")).post(
        TICKETS, {"order": order.pk, "subject": "x", "message": "We are checking.", "visibility": "public"},
        format="json",
    )
    assert response.status_code == 201
    assert Notification.objects.filter(order=order, kind=Notification.Kind.TICKET_REPLY).count() == 1


def test_merchant_user_cannot_open_with_an_internal_note(merchant):
    response = client_for(member(merchant)).post(
        TICKETS, {"subject": "x", "message": "secret", "visibility": "internal"}, format="json"
    )
    assert response.status_code == 400
    assert "visibility" in response.json()["error"]["fields"]
    assert not Ticket.objects.exists()


@pytest.mark.parametrize("payload, field", [
    ({}, "subject"),
    ({"subject": "   "}, "subject"),
    ({"subject": " " + "x" * 199 + " "}, "subject"),  # the limit is the schema's, spaces included
    ({"subject": "x" * 201}, "subject"),
    ({"subject": "x", "category": "nope"}, "category"),
    ({"subject": "x", "priority": "asap"}, "priority"),
    ({"subject": "x", "order": 2**70}, "order"),
])
def test_invalid_create_names_the_field(merchant, payload, field):
    response = client_for(member(merchant)).post(TICKETS, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


# --- messages -------------------------------------------------------------------------------------


def test_messages_hide_internal_notes_from_merchant_users(merchant):
    ticket = ticket_for(merchant)
    note(ticket, Visibility.PUBLIC)
    note(ticket, Visibility.MERCHANT)
    note(ticket, Visibility.INTERNAL)
    url = f"{TICKETS}{ticket.pk}/messages/"
    seen = [m["visibility"] for m in client_for(member(merchant, Role.VIEWER)).get(url).json()]
    assert seen == ["public", "merchant"]
    assert len(client_for(StaffUserFactory()).get(url).json()) == 3


def test_message_authors(merchant):
    ticket = ticket_for(merchant)
    agent = StaffUserFactory(username="agent-li")
    note(ticket, Visibility.PUBLIC, actor=Actor.staff(agent))
    services.add_message(ticket=ticket, body="hi", visibility=Visibility.PUBLIC, actor=Actor.customer("w@x.org"),
                         author_name="Wang Fang")
    note(ticket, Visibility.PUBLIC)
    rows = client_for(member(merchant)).get(f"{TICKETS}{ticket.pk}/messages/").json()
    assert [(m["author"], m["author_kind"]) for m in rows] == [
        ("agent-li", "staff"), ("Wang Fang", "customer"), ("system", "system")]


def test_messages_of_another_merchants_ticket_answer_404(merchant, other_merchant):
    theirs = ticket_for(other_merchant)
    client = client_for(member(merchant))
    url = f"{TICKETS}{theirs.pk}/messages/"
    assert client.get(url).status_code == 404
    assert client.post(url, {"body": "hello"}, format="json").status_code == 404
    assert not TicketMessage.objects.filter(ticket=theirs).exists()


def test_merchant_public_reply_is_queued_for_the_customer(merchant):
    ticket = ticket_for(merchant)
    response = client_for(member(merchant)).post(
        f"{TICKETS}{ticket.pk}/messages/", {"body": "Your payment arrived.", "visibility": "public"}, format="json"
    )
    assert response.status_code == 201
    message = TicketMessage.objects.get(pk=response.json()["id"])
    assert Notification.objects.filter(ticket_message=message).count() == 1
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.OPEN and ticket.first_responded_at is not None


def test_merchant_note_is_not_emailed(merchant):
    ticket = ticket_for(merchant)
    response = client_for(member(merchant)).post(f"{TICKETS}{ticket.pk}/messages/", {"body": "We refunded it."},
                                                 format="json")
    assert response.status_code == 201
    assert response.json()["visibility"] == "merchant"  # the default for merchant users
    assert not Notification.objects.exists()


def test_merchant_cannot_post_an_internal_note(merchant):
    ticket = ticket_for(merchant)
    response = client_for(member(merchant)).post(
        f"{TICKETS}{ticket.pk}/messages/", {"body": "psst", "visibility": "internal"}, format="json"
    )
    assert response.status_code == 400
    assert "visibility" in response.json()["error"]["fields"]
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_viewer_cannot_post_a_message(merchant):
    ticket = ticket_for(merchant)
    response = client_for(member(merchant, Role.VIEWER)).post(f"{TICKETS}{ticket.pk}/messages/", {"body": "hi"},
                                                               format="json")
    assert response.status_code == 403
    assert not TicketMessage.objects.filter(ticket=ticket).exists()


def test_staff_reply_needs_reply_ticket_and_defaults_to_internal(merchant):
    ticket = ticket_for(merchant)
    url = f"{TICKETS}{ticket.pk}/messages/"
    assert client_for(staff()).post(url, {"body": "x"}, format="json").status_code == 403
    assert client_for(staff()).get(url).status_code == 200  # reading needs no permission
    response = client_for(staff("reply_ticket")).post(url, {"body": "provider says pending"}, format="json")
    assert response.status_code == 201
    assert response.json()["visibility"] == "internal"
    assert not Notification.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"body": "  "}, {"body": "x" * (services.MAX_MESSAGE_LENGTH + 1)}])
def test_message_body_is_checked(merchant, payload):
    ticket = ticket_for(merchant)
    response = client_for(member(merchant)).post(f"{TICKETS}{ticket.pk}/messages/", payload, format="json")
    assert response.status_code == 400
    assert "body" in response.json()["error"]["fields"]


def test_message_writes_are_throttled(merchant, settings):
    settings.API_WRITE_RATE = "1/min"
    ticket = ticket_for(merchant)
    client = client_for(member(merchant))
    url = f"{TICKETS}{ticket.pk}/messages/"
    assert client.post(url, {"body": "one"}, format="json").status_code == 201
    response = client.post(url, {"body": "two"}, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert client.get(url).status_code == 200


# --- schema ----------------------------------------------------------------------------------------


def test_schema_has_the_ticket_paths_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    text = (tmp_path / "schema.yaml").read_text()
    assert "/api/v1/tickets/{ticket_id}/messages/" in text
    assert "/api/v1/tickets/{ticket_id}/:" in text
