"""`orders_visible_to`: who may see which orders. Every view and API goes through it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from orders.models import Merchant
from orders.selectors import orders_visible_to
from tests.orders.factories import MembershipFactory, MerchantFactory, StaffUserFactory, UserFactory, submitted_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    """Two merchants with two orders each, and a third merchant that is deactivated."""
    acme, globex, dormant = MerchantFactory(), MerchantFactory(), MerchantFactory()
    orders = {m.pk: {submitted_order(merchant=m).pk, submitted_order(merchant=m).pk} for m in (acme, globex, dormant)}
    # Orders are taken while a merchant is active; it may be deactivated later.
    Merchant.objects.filter(pk=dormant.pk).update(active=False)
    return acme, globex, dormant, orders


def _visible(user) -> set[int]:
    return set(orders_visible_to(user).values_list("pk", flat=True))


def test_staff_see_every_order_including_inactive_merchants(shop):
    *_, orders = shop

    assert _visible(StaffUserFactory()) == set().union(*orders.values())


def test_a_superuser_sees_every_order(shop):
    *_, orders = shop

    assert _visible(UserFactory(is_superuser=True)) == set().union(*orders.values())


def test_a_member_sees_only_their_merchants_orders(shop):
    acme, _, _, orders = shop
    member = MembershipFactory(merchant=acme).user

    assert _visible(member) == orders[acme.pk]


def test_a_member_of_two_merchants_sees_both_without_duplicates(shop):
    acme, globex, _, orders = shop
    member = MembershipFactory(merchant=acme).user
    MembershipFactory(user=member, merchant=globex)

    visible = list(orders_visible_to(member).values_list("pk", flat=True))
    assert sorted(visible) == sorted(orders[acme.pk] | orders[globex.pk])


def test_an_inactive_merchants_orders_are_hidden_from_its_members(shop):
    _, _, dormant, _ = shop
    member = MembershipFactory(merchant=dormant).user

    assert _visible(member) == set()


def test_an_anonymous_visitor_sees_nothing(shop):
    assert _visible(AnonymousUser()) == set()


def test_no_user_sees_nothing(shop):
    assert _visible(None) == set()


def test_a_user_without_membership_sees_nothing(shop):
    assert _visible(UserFactory()) == set()


def test_a_user_of_another_merchant_sees_none_of_this_merchants_orders(shop):
    acme, _, _, orders = shop
    outsider = MembershipFactory(merchant=MerchantFactory()).user

    assert _visible(outsider) == set()
    assert not orders_visible_to(outsider).filter(pk__in=orders[acme.pk]).exists()


def test_a_deactivated_member_sees_nothing(shop):
    acme, *_ = shop
    member = MembershipFactory(merchant=acme, user=UserFactory(is_active=False)).user

    assert _visible(member) == set()


def test_a_deactivated_staff_user_sees_nothing(shop):
    assert _visible(StaffUserFactory(is_active=False)) == set()
