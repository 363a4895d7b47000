"""Who reaches which portal page: login, membership (404 otherwise), method (405), role (403)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.urls import reverse

from orders.causes import Cause
from orders.models import MerchantMembership
from support.models import TicketSource
from support.services import open_ticket
from tests.backoffice.portal.conftest import MANAGER, OPERATOR, VIEWER, member, portal_url
from tests.orders.engine_helpers import ENGINE_ACTOR, flag_order, pending_order
from tests.orders.factories import MembershipFactory, MerchantFactory, StaffUserFactory, UserFactory

pytestmark = pytest.mark.django_db


@dataclass
class Objects:
    order: object
    ticket: object
    membership: MerchantMembership


def objects_of(merchant) -> Objects:
    order, _attempt = pending_order(merchant=merchant)
    flag_order(order, Cause.RESULT_UNKNOWN)
    ticket = open_ticket(order=order, subject="Where is my order?", source=TicketSource.STAFF, actor=ENGINE_ACTOR)
    colleague = MembershipFactory(merchant=merchant, role=VIEWER)
    return Objects(order, ticket, colleague)


@pytest.fixture
def mine(merchant):
    return objects_of(merchant)


@pytest.fixture
def theirs(other_merchant):
    return objects_of(other_merchant)


@pytest.fixture(autouse=True)
def no_provider_calls(monkeypatch):
    calls = []
    monkeypatch.setattr("backoffice.portal.order_views.check_order_now",
                        lambda order_id, *, actor: calls.append(order_id) or _EmptyReport())
    return calls


class _EmptyReport:
    items: list = []


# (url name, object kwargs, method, form data for a valid write)
PAGES = [
    ("home", (), "GET", None),
    ("orders", (), "GET", None),
    ("orders_export", (), "GET", None),
    ("order", ("order_id",), "GET", None),
    ("order_check_now", ("order_id",), "POST", {}),
    ("tickets", (), "GET", None),
    ("ticket_new", (), "GET", None),
    ("ticket_new", (), "POST", {"subject": "Help", "category": "other", "priority": "normal", "body": "Hello",
                                "visibility": "merchant"}),
    ("ticket", ("ticket_id",), "GET", None),
    ("ticket_reply", ("ticket_id",), "POST", {"body": "Any news?", "visibility": "merchant"}),
    ("members", (), "GET", None),
    ("members", (), "POST", {"identifier": "nobody", "role": "viewer"}),
    ("member_role", ("membership_id",), "POST", {"role": "operator"}),
    ("member_remove", ("membership_id",), "POST", {}),
]
PAGE_IDS = [f"{method} {name}" for name, _kw, method, _data in PAGES]


def url_for(name: str, merchant, objects: Objects, kwargs: tuple[str, ...]) -> str:
    values = {"order_id": objects.order.pk, "ticket_id": objects.ticket.pk, "membership_id": objects.membership.pk}
    return portal_url(name, merchant, **{key: values[key] for key in kwargs})


def call(client, method: str, url: str, data):
    return client.get(url) if method == "GET" else client.post(url, data or {})


@pytest.mark.parametrize(("name", "kwargs", "method", "data"), PAGES, ids=PAGE_IDS)
def test_anonymous_users_are_sent_to_the_login_page(client, merchant, mine, name, kwargs, method, data):
    url = url_for(name, merchant, mine, kwargs)
    response = call(client, method, url, data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize(("name", "kwargs", "method", "data"), PAGES, ids=PAGE_IDS)
def test_a_manager_of_another_merchant_gets_404_everywhere(as_user, merchant, other_merchant, mine, name, kwargs,
                                                           method, data):
    client = as_user(member(other_merchant, MANAGER))
    response = call(client, method, url_for(name, merchant, mine, kwargs), data)
    assert response.status_code == 404
    assert "We cannot find this page" in response.content.decode()


@pytest.mark.parametrize(("name", "kwargs", "method", "data"),
                         [page for page in PAGES if page[1]], ids=[i for i, p in zip(PAGE_IDS, PAGES) if p[1]])
def test_another_merchants_object_under_ones_own_code_is_not_found(as_user, other_merchant, theirs, merchant, name,
                                                                   kwargs, method, data):
    client = as_user(member(merchant, MANAGER))
    response = call(client, method, url_for(name, merchant, theirs, kwargs), data)
    assert response.status_code == 404


def test_an_unknown_merchant_code_is_not_found(as_user, manager):
    response = as_user(manager).get(reverse("portal:home", kwargs={"merchant_code": "no-such-shop"}))
    assert response.status_code == 404


def test_an_inactive_merchant_is_not_found_even_for_its_manager(as_user, merchant, manager):
    merchant.active = False
    merchant.save()
    assert as_user(manager).get(portal_url("home", merchant)).status_code == 404


def test_staff_without_a_membership_get_404_on_merchant_pages(as_user, merchant):
    assert as_user(StaffUserFactory()).get(portal_url("home", merchant)).status_code == 404


EXPECTED = {
    # name, method: (viewer, operator, manager)
    ("home", "GET"): (200, 200, 200),
    ("orders", "GET"): (200, 200, 200),
    ("orders_export", "GET"): (403, 403, 200),
    ("order", "GET"): (200, 200, 200),
    ("order_check_now", "POST"): (403, 302, 302),
    ("tickets", "GET"): (200, 200, 200),
    ("ticket_new", "GET"): (403, 200, 200),
    ("ticket_new", "POST"): (403, 302, 302),
    ("ticket", "GET"): (200, 200, 200),
    ("ticket_reply", "POST"): (403, 302, 302),
    ("members", "GET"): (403, 403, 200),
    ("members", "POST"): (403, 403, 400),  # the manager's form names an unknown user
    ("member_role", "POST"): (403, 403, 302),
    ("member_remove", "POST"): (403, 403, 302),
}
ROLE_CASES = [
    pytest.param(name, kwargs, method, data, role, EXPECTED[(name, method)][index], id=f"{role} {method} {name}")
    for name, kwargs, method, data in PAGES
    for index, role in enumerate((VIEWER, OPERATOR, MANAGER))
]


@pytest.mark.parametrize(("name", "kwargs", "method", "data", "role", "status"), ROLE_CASES)
def test_the_role_decides_what_a_member_may_do(as_user, merchant, mine, name, kwargs, method, data, role, status):
    client = as_user(member(merchant, role))
    response = call(client, method, url_for(name, merchant, mine, kwargs), data)
    assert response.status_code == status


def test_the_refusal_page_names_the_role_needed(as_user, merchant, viewer):
    response = as_user(viewer).get(portal_url("members", merchant))
    assert response.status_code == 403
    assert "this needs the role Manager or higher" in response.content.decode()


@pytest.mark.parametrize("name", ["home", "orders", "tickets"])
def test_a_page_refuses_post_with_405(as_user, merchant, manager, name):
    assert as_user(manager).post(portal_url(name, merchant)).status_code == 405


@pytest.mark.parametrize(("name", "kwargs"), [("order_check_now", ("order_id",)), ("ticket_reply", ("ticket_id",)),
                                              ("member_remove", ("membership_id",))])
def test_an_action_refuses_get_with_405(as_user, merchant, manager, mine, name, kwargs):
    assert as_user(manager).get(url_for(name, merchant, mine, kwargs)).status_code == 405


def test_members_see_the_nav_entries_of_their_role(as_user, merchant, viewer, manager):
    members_url = portal_url("members", merchant)
    assert members_url not in as_user(viewer).get(portal_url("home", merchant)).content.decode()
    assert members_url in as_user(manager).get(portal_url("home", merchant)).content.decode()


# --- the entry: /merchant/, the site root, login and logout ---------------------------------------


def test_one_membership_goes_straight_to_its_merchant(as_user, merchant, operator):
    response = as_user(operator).get(reverse("portal:choose"))
    assert response.status_code == 302
    assert response["Location"] == portal_url("home", merchant)


def test_several_memberships_get_a_chooser(as_user, merchant, other_merchant):
    user = member(merchant, VIEWER)
    MembershipFactory(user=user, merchant=other_merchant, role=MANAGER)
    body = as_user(user).get(reverse("portal:choose")).content.decode()
    assert portal_url("home", merchant) in body and portal_url("home", other_merchant) in body


def test_the_switcher_lists_the_users_other_merchants(as_user, merchant, other_merchant):
    user = member(merchant, VIEWER)
    MembershipFactory(user=user, merchant=other_merchant, role=MANAGER)
    body = as_user(user).get(portal_url("home", merchant)).content.decode()
    assert "Switch merchant" in body and portal_url("home", other_merchant) in body


def test_the_chooser_leaves_out_inactive_merchants(as_user, merchant, other_merchant):
    user = member(merchant, VIEWER)
    MembershipFactory(user=user, merchant=MerchantFactory(code="closed-shop", active=False))
    response = as_user(user).get(reverse("portal:choose"))
    assert response["Location"] == portal_url("home", merchant)


def test_a_user_without_membership_is_told_how_to_get_one(as_user):
    body = as_user(UserFactory(username="newcomer")).get(reverse("portal:choose")).content.decode()
    assert "You do not belong to a merchant yet" in body and "newcomer" in body


def test_staff_without_membership_are_pointed_to_the_back_office(as_user):
    body = as_user(StaffUserFactory()).get(reverse("portal:choose")).content.decode()
    assert reverse("admin:index") in body


def test_the_site_root_sends_anonymous_users_to_the_login_page(client):
    assert client.get("/")["Location"] == reverse("login")


def test_the_site_root_sends_staff_to_the_admin(as_user):
    assert as_user(StaffUserFactory()).get("/")["Location"] == reverse("admin:index")


def test_the_site_root_sends_merchant_users_to_the_portal(as_user, operator):
    assert as_user(operator).get("/")["Location"] == reverse("portal:choose")


def test_a_merchant_user_logs_in_on_the_login_page_and_lands_on_their_merchant(client, merchant):
    member(merchant, OPERATOR, username="lin", password="a-long-password-1")
    page = client.get(reverse("login"))
    assert page.status_code == 200 and 'name="password"' in page.content.decode()

    response = client.post(reverse("login"), {"username": "lin", "password": "a-long-password-1"}, follow=True)

    assert response.redirect_chain[-1][0] == portal_url("home", merchant)


def test_a_wrong_password_is_refused_on_the_login_page(client, merchant):
    member(merchant, OPERATOR, username="lin", password="a-long-password-1")
    response = client.post(reverse("login"), {"username": "lin", "password": "wrong"})
    assert response.status_code == 200
    assert "did not match" in response.content.decode()


def test_logging_out_takes_a_post_and_returns_to_the_login_page(as_user, operator):
    client = as_user(operator)
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response["Location"] == reverse("login")
    assert client.get(reverse("portal:choose")).status_code == 302


def test_portal_writes_need_the_csrf_token(merchant, operator, mine):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(portal_url("ticket_reply", merchant, ticket_id=mine.ticket.pk),
                           {"body": "hi", "visibility": "merchant"})
    assert response.status_code == 403
