"""The members page: managers add, change and remove members through orders.memberships,
never leave the merchant without a manager, and see the recent changes."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orders.models import MembershipEvent, MembershipRole, MerchantMembership
from tests.backoffice.portal.conftest import MANAGER, OPERATOR, VIEWER, member, portal_url, queries_of
from tests.orders.factories import UserFactory

pytestmark = pytest.mark.django_db


def membership(user, merchant) -> MerchantMembership:
    return MerchantMembership.objects.get(user=user, merchant=merchant)


def test_the_page_lists_the_merchants_members_only(as_user, merchant, other_merchant, manager, viewer):
    member(other_merchant, MANAGER, username="stranger")
    body = as_user(manager).get(portal_url("members", merchant)).content.decode()
    assert "mona" in body and "vera" in body and "stranger" not in body


def test_a_manager_adds_an_existing_user_by_username(as_user, merchant, manager):
    newcomer = UserFactory(username="nico")
    response = as_user(manager).post(portal_url("members", merchant), {"identifier": "nico", "role": OPERATOR},
                                     follow=True)
    assert membership(newcomer, merchant).role == OPERATOR
    assert "nico is now a member, as Operator." in response.content.decode()


def test_a_manager_adds_a_user_by_email_in_any_case(as_user, merchant, manager):
    newcomer = UserFactory(username="nico", email="Nico@Example.com")
    as_user(manager).post(portal_url("members", merchant), {"identifier": "nico@example.COM", "role": VIEWER})
    assert membership(newcomer, merchant).role == VIEWER


def test_an_unknown_or_inactive_account_cannot_be_added(as_user, merchant, manager):
    UserFactory(username="gone", is_active=False)
    client = as_user(manager)
    for identifier in ("nobody", "gone"):
        response = client.post(portal_url("members", merchant), {"identifier": identifier, "role": VIEWER})
        assert response.status_code == 400
        assert response.context["add_form"].errors["identifier"]
    assert MerchantMembership.objects.filter(merchant=merchant).count() == 1


def test_an_existing_member_is_not_added_twice(as_user, merchant, manager, viewer):
    response = as_user(manager).post(portal_url("members", merchant), {"identifier": "vera", "role": MANAGER})
    assert response.status_code == 400
    assert "already a member" in response.context["add_form"].errors["identifier"][0]
    assert membership(viewer, merchant).role == VIEWER


def test_a_manager_changes_a_role(as_user, merchant, manager, viewer):
    as_user(manager).post(portal_url("member_role", merchant, membership_id=membership(viewer, merchant).pk),
                          {"role": OPERATOR})
    assert membership(viewer, merchant).role == OPERATOR


def test_a_manager_removes_a_member(as_user, merchant, manager, viewer):
    as_user(manager).post(portal_url("member_remove", merchant, membership_id=membership(viewer, merchant).pk))
    assert not MerchantMembership.objects.filter(user=viewer, merchant=merchant).exists()


def test_the_last_manager_cannot_demote_themselves(as_user, merchant, manager):
    response = as_user(manager).post(
        portal_url("member_role", merchant, membership_id=membership(manager, merchant).pk), {"role": VIEWER})
    assert response.status_code == 400
    assert "mona is the last manager of this merchant" in response.content.decode()
    assert membership(manager, merchant).role == MANAGER
    assert not MembershipEvent.objects.exists()


def test_the_last_manager_cannot_remove_themselves(as_user, merchant, manager):
    response = as_user(manager).post(
        portal_url("member_remove", merchant, membership_id=membership(manager, merchant).pk))
    assert response.status_code == 400
    assert "last manager" in response.content.decode()
    assert MerchantMembership.objects.filter(user=manager, merchant=merchant).exists()


def test_with_a_second_manager_one_may_step_down_and_lands_on_the_home_page(as_user, merchant, manager):
    member(merchant, MANAGER, username="max")
    response = as_user(manager).post(
        portal_url("member_role", merchant, membership_id=membership(manager, merchant).pk), {"role": OPERATOR})
    assert response["Location"] == portal_url("home", merchant)
    assert membership(manager, merchant).role == OPERATOR


def test_a_manager_who_leaves_lands_on_the_merchant_chooser(as_user, merchant, manager):
    member(merchant, MANAGER, username="max")
    response = as_user(manager).post(
        portal_url("member_remove", merchant, membership_id=membership(manager, merchant).pk))
    assert response["Location"] == reverse("portal:choose")


def test_every_change_is_recorded_and_shown(as_user, merchant, manager):
    newcomer = UserFactory(username="nico")
    client = as_user(manager)
    client.post(portal_url("members", merchant), {"identifier": "nico", "role": VIEWER})
    joined = membership(newcomer, merchant)
    client.post(portal_url("member_role", merchant, membership_id=joined.pk), {"role": OPERATOR})
    client.post(portal_url("member_remove", merchant, membership_id=joined.pk))

    events = list(MembershipEvent.objects.order_by("id").values_list(
        "kind", "username", "actor_username", "from_role", "to_role"))
    assert events == [
        ("added", "nico", "mona", "", VIEWER),
        ("role_changed", "nico", "mona", VIEWER, OPERATOR),
        ("removed", "nico", "mona", OPERATOR, ""),
    ]
    body = client.get(portal_url("members", merchant)).content.decode()
    assert "mona added nico as Viewer" in body
    assert "mona changed nico from Viewer to Operator" in body
    assert "mona removed nico" in body


def test_an_invalid_role_is_a_row_error(as_user, merchant, manager, viewer):
    response = as_user(manager).post(
        portal_url("member_role", merchant, membership_id=membership(viewer, merchant).pk), {"role": "owner"})
    assert response.status_code == 400
    assert membership(viewer, merchant).role == VIEWER


def test_the_members_page_runs_as_many_queries_for_20_members_as_for_2(as_user, merchant, manager,
                                                                        django_assert_num_queries):
    client = as_user(manager)
    member(merchant, VIEWER)
    client.post(portal_url("members", merchant), {"identifier": UserFactory().username, "role": VIEWER})
    expected = queries_of(lambda: client.get(portal_url("members", merchant)))
    for _ in range(17):
        member(merchant, OPERATOR)
    for _ in range(5):
        client.post(portal_url("members", merchant), {"identifier": UserFactory().username, "role": VIEWER})
    with django_assert_num_queries(expected):
        response = client.get(portal_url("members", merchant))
    assert len(response.context["members"]) == 25
