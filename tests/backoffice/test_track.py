"""The customer status page at /track/<token>/ and its "report a problem" form."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from backoffice import track
from orders import services
from orders.actors import Actor
from orders.causes import Cause, category_of
from orders.exceptions import ValidationFailed
from orders.models import Order
from orders.states import OrderStatus
from orders.status_links import status_token
from tests.orders.factories import MerchantFactory, OrderFactory, StaffUserFactory, order_in_status

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def order():
    return OrderFactory(merchant=MerchantFactory(name="Tea House"), reference="TEA-1001",
                        customer_email="Li.Wei@Example.com")


@pytest.fixture
def fake_report(monkeypatch):
    fake = mock.Mock(return_value=object())
    monkeypatch.setattr(track, "report_problem", fake)
    return fake


def page_url(order) -> str:
    return reverse("track-order", args=[status_token(order)])


def report_url(order) -> str:
    return reverse("track-report", args=[status_token(order)])


def flag(order: Order, cause: str) -> Order:
    # Read-side fixture: the flag as the sweep would have left it.
    Order.objects.filter(pk=order.pk).update(
        stuck_since=timezone.now() - timedelta(minutes=30), stuck_cause=cause, stuck_category=category_of(cause)
    )
    order.refresh_from_db()
    return order


def valid_report(**overrides) -> dict:
    return {"name": "Li Wei", "email": "li.wei@example.com", "message": "I paid but nothing happened.", **overrides}


# --- the page -------------------------------------------------------------------------------


def test_page_shows_reference_shop_and_status_without_login(client, order):
    response = client.get(page_url(order))

    assert response.status_code == 200
    body = response.content.decode()
    assert "TEA-1001" in body
    assert "Tea House" in body
    assert "We have received your order" in body


def test_page_is_not_indexed_and_never_sends_its_address_to_other_sites(client, order):
    response = client.get(page_url(order))

    # same-origin, not no-referrer: see backoffice.track._private (CSRF needs the Origin header).
    assert response["Referrer-Policy"] == "same-origin"
    assert '<meta name="robots" content="noindex' in response.content.decode()
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("cause", Cause.values)
def test_page_shows_the_customer_text_for_each_cause(client, order, cause):
    flag(order, cause)

    response = client.get(page_url(order))

    text = track.CAUSE_TEXT[cause]
    body = response.content.decode()
    # The template escapes apostrophes; compare with the escaped text.
    from django.utils.html import escape
    assert escape(text.happening % {"shop": "Tea House"}) in body
    assert escape(text.todo % {"shop": "Tea House"}) in body


def test_every_cause_and_status_has_a_customer_text():
    assert set(track.CAUSE_TEXT) == set(Cause.values)
    assert set(track.STATUS_TEXT) == set(OrderStatus.values)


@pytest.mark.parametrize("status", OrderStatus.values)
def test_page_shows_the_plain_words_for_each_status(client, status):
    order = order_in_status(status)

    response = client.get(page_url(order))

    assert response.status_code == 200
    from django.utils.html import escape
    assert escape(str(track.STATUS_TEXT[status].headline)) in response.content.decode()


def test_payment_check_causes_tell_the_customer_not_to_pay_again(client, order):
    flag(order, Cause.RESULT_UNKNOWN)

    body = client.get(page_url(order)).content.decode()

    assert "There is no need to pay again" in body


def test_page_never_shows_staff_notes_or_staff_names(client, order):
    staff = StaffUserFactory(username="agent-zhang", first_name="Zhang", last_name="Secretname")
    services.add_staff_note(order=order, text="SECRET-NOTE customer sounded angry", actor=Actor.staff(staff))
    flag(order, Cause.AMOUNT_MISMATCH)

    body = client.get(page_url(order)).content.decode()

    assert "SECRET-NOTE" not in body
    assert "agent-zhang" not in body
    assert "Secretname" not in body
    assert "amount_mismatch" not in body


def test_page_never_shows_other_orders(client, order):
    other = OrderFactory(merchant=order.merchant, reference="OTHER-2002", customer_name="Other Person")

    body = client.get(page_url(order)).content.decode()

    assert "OTHER-2002" not in body
    assert "Other Person" not in body
    assert other.status_token not in body


def test_page_does_not_show_the_customer_email(client, order):
    body = client.get(page_url(order)).content.decode()

    assert "example.com" not in body.lower()


def test_tampered_token_is_a_friendly_404(client, order):
    other = OrderFactory()
    _, stamp, signature = status_token(order).split(":")

    response = client.get(reverse("track-order", args=[f"{other.status_token}:{stamp}:{signature}"]))

    assert response.status_code == 404
    body = response.content.decode()
    assert "We cannot open this link" in body
    assert other.reference not in body and order.reference not in body
    assert response["Referrer-Policy"] == "same-origin"


def test_expired_token_is_a_404(client, order):
    with time_machine.travel(timezone.now() - timedelta(days=91), tick=False):
        old = status_token(order)

    response = client.get(reverse("track-order", args=[old]))

    assert response.status_code == 404
    assert "TEA-1001" not in response.content.decode()


def test_unknown_token_is_a_404(client):
    response = client.get("/track/not-a-token/")

    assert response.status_code == 404
    assert "We cannot open this link" in response.content.decode()


def test_page_is_in_english_by_default(client, order):
    response = client.get(page_url(order))

    assert '<html lang="en"' in response.content.decode()


def test_page_follows_accept_language_for_simplified_chinese(client, order):
    response = client.get(page_url(order), HTTP_ACCEPT_LANGUAGE="zh-Hans")

    assert response["Content-Language"] == "zh-hans"
    assert '<html lang="zh-hans"' in response.content.decode()


def test_page_has_a_language_switch(client, order):
    body = client.get(page_url(order)).content.decode()

    assert f'action="{reverse("set_language")}"' in body
    assert 'value="zh-hans"' in body


def test_language_switch_keeps_the_customer_on_the_page(client, order):
    url = page_url(order)

    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": url})

    assert response.status_code == 302
    assert response["Location"] == url
    assert '<html lang="zh-hans"' in client.get(url).content.decode()


# --- report a problem -----------------------------------------------------------------------


def test_report_calls_report_problem_once_and_redirects_with_a_message(client, order, fake_report):
    token = status_token(order)

    response = client.post(reverse("track-report", args=[token]), valid_report(), follow=True)

    fake_report.assert_called_once_with(
        order=order, name="Li Wei", email="li.wei@example.com", message="I paid but nothing happened."
    )
    # Back to the same link the customer came from.
    assert response.redirect_chain[-1] == (reverse("track-order", args=[token]), 302)
    assert "We have your message and will reply by email" in response.content.decode()


def test_report_email_is_compared_case_insensitively(client, order, fake_report):
    response = client.post(report_url(order), valid_report(email="LI.WEI@EXAMPLE.COM"))

    assert response.status_code == 302
    fake_report.assert_called_once()


def test_report_with_another_email_is_refused_without_revealing_the_right_one(client, order, fake_report):
    response = client.post(report_url(order), valid_report(email="someone@else.test"))

    assert response.status_code == 400
    body = response.content.decode()
    assert "This is not the email address we have for this order" in body
    assert "li.wei@example.com" not in body.lower()
    fake_report.assert_not_called()


@pytest.mark.parametrize("message", ["", "   "])
def test_report_needs_a_message(client, order, fake_report, message):
    response = client.post(report_url(order), valid_report(message=message))

    assert response.status_code == 400
    assert response.context["form"].errors["message"]
    fake_report.assert_not_called()


def test_report_message_is_at_most_4000_characters(client, order, fake_report):
    response = client.post(report_url(order), valid_report(message="x" * 4001))

    assert response.status_code == 400
    assert response.context["form"].errors["message"]
    fake_report.assert_not_called()


def test_report_message_of_exactly_4000_characters_is_accepted(client, order, fake_report):
    response = client.post(report_url(order), valid_report(message="x" * 4000))

    assert response.status_code == 302


def test_report_shows_a_domain_error_as_a_form_error(client, order, fake_report):
    fake_report.side_effect = ValidationFailed("This order cannot take reports right now.")

    response = client.post(report_url(order), valid_report())

    assert response.status_code == 400
    assert "This order cannot take reports right now." in response.content.decode()


def test_sixth_report_for_one_order_in_an_hour_is_refused(client, order, fake_report):
    for _ in range(5):
        assert client.post(report_url(order), valid_report()).status_code == 302

    response = client.post(report_url(order), valid_report())

    assert response.status_code == 429
    assert "Please wait an hour" in response.content.decode()
    assert fake_report.call_count == 5


def test_report_limit_per_order_resets_after_an_hour(client, order, fake_report):
    for _ in range(5):
        client.post(report_url(order), valid_report())

    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        response = client.post(report_url(order), valid_report())

    assert response.status_code == 302


def test_twenty_first_report_from_one_address_in_an_hour_is_refused(client, fake_report):
    orders = [OrderFactory(customer_email="li.wei@example.com") for _ in range(5)]
    for i in range(20):
        assert client.post(report_url(orders[i % 5]), valid_report()).status_code == 302

    response = client.post(report_url(orders[0]), valid_report())

    assert response.status_code == 429
    assert fake_report.call_count == 20


@override_settings(TRUSTED_PROXIES=1)
def test_behind_a_proxy_each_customer_has_their_own_address_limit(client, fake_report):
    orders = [OrderFactory(customer_email="li.wei@example.com") for _ in range(5)]
    for i in range(20):
        response = client.post(report_url(orders[i % 5]), valid_report(), HTTP_X_FORWARDED_FOR="198.51.100.1")
        assert response.status_code == 302

    refused = client.post(report_url(orders[0]), valid_report(), HTTP_X_FORWARDED_FOR="198.51.100.1")
    another_customer = client.post(report_url(orders[1]), valid_report(), HTTP_X_FORWARDED_FOR="198.51.100.2")

    assert refused.status_code == 429
    assert another_customer.status_code == 302


def test_report_needs_csrf(order, fake_report):
    client = Client(enforce_csrf_checks=True)

    response = client.post(report_url(order), valid_report())

    assert response.status_code == 403
    fake_report.assert_not_called()


def test_report_with_csrf_token_from_the_page_is_accepted(order, fake_report):
    client = Client(enforce_csrf_checks=True)
    client.get(page_url(order))

    response = client.post(report_url(order), {**valid_report(), "csrfmiddlewaretoken": client.cookies["csrftoken"].value})

    assert response.status_code == 302


def test_report_with_a_bad_token_is_a_404(client, fake_report):
    response = client.post("/track/not-a-token/report/", valid_report())

    assert response.status_code == 404
    fake_report.assert_not_called()


def test_report_page_refuses_get(client, order):
    assert client.get(report_url(order)).status_code == 405


# --- with the real support service ----------------------------------------------------------


def test_report_opens_a_customer_ticket_for_the_order(client, order):
    from support.models import Ticket, TicketMessage

    response = client.post(report_url(order), valid_report())

    assert response.status_code == 302
    ticket = Ticket.objects.get(order=order)
    assert TicketMessage.objects.filter(ticket=ticket, body="I paid but nothing happened.").count() == 1


def test_refused_report_changes_nothing(client, order):
    from support.models import Ticket, TicketMessage

    for _ in range(5):
        client.post(report_url(order), valid_report())
    tickets, messages = Ticket.objects.count(), TicketMessage.objects.count()

    response = client.post(report_url(order), valid_report(message="one more"))

    assert response.status_code == 429
    assert (Ticket.objects.count(), TicketMessage.objects.count()) == (tickets, messages)
