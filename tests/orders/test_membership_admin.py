"""The staff admin changes memberships through `orders.memberships`: each change is recorded,
and a merchant keeps its last manager there too."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orders.models import MembershipEvent, MerchantMembership
from tests.orders.factories import MembershipFactory, MerchantFactory, StaffUserFactory, UserFactory

pytestmark = pytest.mark.django_db
Role = MerchantMembership.Role


@pytest.fixture
def admin_client(client):
    client.force_login(StaffUserFactory(is_superuser=True))
    return client


def change_url(membership) -> str:
    return reverse("admin:orders_merchantmembership_change", args=[membership.pk])


def test_a_role_changed_in_the_admin_is_recorded(admin_client):
    merchant = MerchantFactory()
    MembershipFactory(merchant=merchant, role=Role.MANAGER)
    membership = MembershipFactory(merchant=merchant, role=Role.VIEWER)

    response = admin_client.post(change_url(membership), {"role": Role.OPERATOR})

    assert response.status_code == 302
    assert MerchantMembership.objects.get(pk=membership.pk).role == Role.OPERATOR
    event = MembershipEvent.objects.get(user=membership.user)
    assert (event.kind, event.from_role, event.to_role) == ("role_changed", Role.VIEWER, Role.OPERATOR)


def test_a_member_added_in_the_admin_is_recorded(admin_client):
    merchant, user = MerchantFactory(), UserFactory()

    response = admin_client.post(reverse("admin:orders_merchantmembership_add"),
                                 {"user": user.pk, "merchant": merchant.pk, "role": Role.MANAGER})

    assert response.status_code == 302
    assert MembershipEvent.objects.get(user=user).kind == "added"


def test_the_admin_cannot_demote_the_last_manager(admin_client):
    membership = MembershipFactory(role=Role.MANAGER)

    response = admin_client.post(change_url(membership), {"role": Role.VIEWER})

    assert response.status_code == 200
    assert "last manager" in response.content.decode()
    assert MerchantMembership.objects.get(pk=membership.pk).role == Role.MANAGER
    assert not MembershipEvent.objects.exists()


def test_the_admin_cannot_delete_the_last_manager(admin_client):
    membership = MembershipFactory(role=Role.MANAGER)
    url = reverse("admin:orders_merchantmembership_delete", args=[membership.pk])

    response = admin_client.post(url, {"post": "yes"})

    assert "last manager" in response.content.decode()
    assert MerchantMembership.objects.filter(pk=membership.pk).exists()


def test_a_member_removed_in_the_admin_is_recorded(admin_client):
    merchant = MerchantFactory()
    MembershipFactory(merchant=merchant, role=Role.MANAGER)
    membership = MembershipFactory(merchant=merchant, role=Role.OPERATOR)
    url = reverse("admin:orders_merchantmembership_delete", args=[membership.pk])

    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not MerchantMembership.objects.filter(pk=membership.pk).exists()
    assert MembershipEvent.objects.get(username=membership.user.username).kind == "removed"


def test_the_admin_cannot_bulk_delete_every_manager_of_a_merchant(admin_client):
    merchant = MerchantFactory()
    managers = [MembershipFactory(merchant=merchant, role=Role.MANAGER) for _ in range(2)]

    response = admin_client.post(reverse("admin:orders_merchantmembership_changelist"), {
        "action": "delete_selected", "_selected_action": [m.pk for m in managers], "post": "yes",
    })

    assert "last manager" in response.content.decode()
    assert MerchantMembership.objects.filter(merchant=merchant).count() == 2


def test_adding_an_inactive_account_in_the_admin_is_a_form_error(admin_client):
    merchant, user = MerchantFactory(), UserFactory(is_active=False)

    response = admin_client.post(reverse("admin:orders_merchantmembership_add"),
                                 {"user": user.pk, "merchant": merchant.pk, "role": Role.VIEWER})

    assert response.status_code == 200
    assert "Only an active account can become a member." in response.content.decode()
    assert not MerchantMembership.objects.filter(user=user).exists()
