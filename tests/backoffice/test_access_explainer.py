"""The access explainer: its verdict always agrees with what `orders_visible_to` really
returns, and the staff page finds the order and the user it is asked about."""

from __future__ import annotations

import pytest
from django.urls import reverse

from backoffice.access import explain_access, find_user
from orders.models import Merchant, MerchantMembership
from orders.selectors import orders_visible_to
from tests.backoffice.factories import AGENT, non_staff_in, staff_in, staff_with_perms
from tests.orders.factories import MembershipFactory, MerchantFactory, StaffUserFactory, UserFactory, submitted_order

pytestmark = pytest.mark.django_db

Role = MerchantMembership.Role
URL = "/admin/access-explainer/"


def _deactivate_merchant(merchant: Merchant) -> None:
    # Orders are only taken by active merchants: deactivate after the order exists.
    Merchant.objects.filter(pk=merchant.pk).update(active=False)


def _member(merchant, role=Role.VIEWER, **user_kwargs):
    user = UserFactory(**user_kwargs)
    MembershipFactory(user=user, merchant=merchant, role=role)
    return user


# Each scenario builds (user, order) and says whether the user can see and act on the order.
def _staff(order):
    return StaffUserFactory()


def _superuser_not_staff(order):
    return UserFactory(is_superuser=True)


def _inactive_staff(order):
    return StaffUserFactory(is_active=False)


def _no_membership(order):
    return UserFactory()


def _other_merchant(order):
    return _member(MerchantFactory(), Role.MANAGER)


def _inactive_merchant(order):
    user = _member(order.merchant, Role.MANAGER)
    _deactivate_merchant(order.merchant)
    return user


def _inactive_merchant_but_member_elsewhere(order):
    user = _member(order.merchant, Role.MANAGER)
    MembershipFactory(user=user, merchant=MerchantFactory(), role=Role.MANAGER)
    _deactivate_merchant(order.merchant)
    return user


def _inactive_user(order):
    return _member(order.merchant, Role.MANAGER, is_active=False)


def _viewer(order):
    return _member(order.merchant, Role.VIEWER)


def _operator(order):
    return _member(order.merchant, Role.OPERATOR)


def _manager(order):
    return _member(order.merchant, Role.MANAGER)


def _member_of_two_merchants(order):
    user = _member(MerchantFactory(), Role.MANAGER)
    MembershipFactory(user=user, merchant=order.merchant, role=Role.OPERATOR)
    return user


SCENARIOS = [
    (_staff, True, True),
    (_superuser_not_staff, True, True),
    (_inactive_staff, False, False),
    (_no_membership, False, False),
    (_other_merchant, False, False),
    (_inactive_merchant, False, False),
    (_inactive_merchant_but_member_elsewhere, False, False),
    (_inactive_user, False, False),
    (_viewer, True, False),
    (_operator, True, True),
    (_manager, True, True),
    (_member_of_two_merchants, True, True),
]


@pytest.mark.parametrize(("make_user", "can_see", "can_act"), SCENARIOS,
                         ids=[s[0].__name__.strip("_") for s in SCENARIOS])
def test_the_verdict_agrees_with_the_scoping_selector(make_user, can_see, can_act):
    order = submitted_order()
    user = make_user(order)
    order.refresh_from_db()
    order.merchant.refresh_from_db()

    verdict = explain_access(user=user, order=order)
    really_visible = orders_visible_to(user).filter(pk=order.pk).exists()

    assert verdict.can_see == really_visible
    assert verdict.can_see == can_see
    assert verdict.can_act == can_act
    assert verdict.reasons, "a verdict always says why"
    if not verdict.can_see:
        assert verdict.fixes, "a refusal always says what to do"


def test_a_viewer_is_told_they_can_read_but_not_act():
    order = submitted_order()
    verdict = explain_access(user=_viewer(order), order=order)

    assert any("viewer" in reason for reason in verdict.reasons)
    assert any("operator" in fix for fix in verdict.fixes)


def test_another_merchants_member_is_told_which_merchants_they_belong_to():
    order = submitted_order()
    other = MerchantFactory(name="Other Shop")
    user = _member(other, Role.MANAGER)

    [reason] = explain_access(user=user, order=order).reasons

    assert order.merchant.name in reason
    assert "Other Shop" in reason


def test_find_user_by_username_or_email_and_not_when_ambiguous():
    alice = UserFactory(username="alice", email="Alice@Example.com")
    UserFactory(username="bob-1", email="shared@example.com")
    UserFactory(username="bob-2", email="shared@example.com")

    assert find_user("alice") == alice
    assert find_user("alice@example.COM") == alice
    assert find_user("shared@example.com") is None
    assert find_user("nobody") is None
    assert find_user("   ") is None


# --- the staff page -----------------------------------------------------------------------------------


@pytest.fixture
def agent_client(client):
    client.force_login(staff_in(AGENT))
    return client


def test_the_page_renders_the_question_form(agent_client):
    response = agent_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="order"' in html and 'name="user"' in html
    assert 'id="access-verdict"' not in html


def test_the_url_is_the_named_admin_url():
    assert reverse("admin:access_explainer") == URL


def test_an_unknown_order_is_a_form_error(agent_client):
    UserFactory(username="someone")

    response = agent_client.get(URL, {"order": "NO-SUCH-ORDER", "user": "someone"})

    assert response.status_code == 200
    assert "No order has this id or reference." in response.content.decode()
    assert response.context["verdict"] is None


def test_an_unknown_user_is_a_form_error(agent_client):
    order = submitted_order()

    response = agent_client.get(URL, {"order": str(order.pk), "user": "nobody-here"})

    assert "No single user has this username or email address." in response.content.decode()
    assert response.context["verdict"] is None


def test_a_reference_used_by_two_merchants_asks_for_the_merchant_code(agent_client):
    submitted_order(reference="SHARED-1")
    submitted_order(reference="SHARED-1")
    UserFactory(username="someone")

    response = agent_client.get(URL, {"order": "SHARED-1", "user": "someone"})

    assert "merchant-code/reference" in response.content.decode()
    assert response.context["verdict"] is None


def test_the_verdict_is_rendered_for_an_order_id_and_a_username(agent_client):
    order = submitted_order()
    user = _other_merchant(order)

    response = agent_client.get(URL, {"order": str(order.pk), "user": user.username})

    html = response.content.decode()
    verdict = html[html.index('id="access-verdict"'):]
    assert f"{user.username} cannot see this order" in verdict
    assert order.merchant.name in verdict  # the reason
    assert "add a membership" in verdict  # what to do
    assert reverse("admin:orders_order_change", args=[order.pk]) in verdict


def test_the_verdict_is_rendered_for_a_merchant_code_and_reference_and_an_email(agent_client):
    order = submitted_order(reference="ORD-77")
    submitted_order(reference="ORD-77")  # the same reference at another merchant
    user = _operator(order)

    response = agent_client.get(URL, {"order": f"{order.merchant.code}/ORD-77", "user": user.email.upper()})

    assert response.context["order"] == order
    assert f"{user.username} can see this order" in response.content.decode()


@pytest.mark.parametrize("with_code", [False, True])
def test_a_reference_containing_slashes_is_found(agent_client, with_code):
    order = submitted_order(reference="INV/2026/0042")
    user = _viewer(order)
    asked = f"{order.merchant.code}/INV/2026/0042" if with_code else "INV/2026/0042"

    response = agent_client.get(URL, {"order": asked, "user": user.username})

    assert response.context["order"] == order
    assert f"{user.username} can see this order" in response.content.decode()


def test_staff_without_view_order_permission_get_403(client):
    client.force_login(staff_with_perms("add_note"))

    assert client.get(URL).status_code == 403


def test_a_user_who_is_not_staff_is_sent_to_log_in(client):
    client.force_login(non_staff_in(AGENT))

    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
