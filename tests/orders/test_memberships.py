"""orders.memberships: the one write path for a merchant's memberships, with its record and the
last-manager guard."""

from __future__ import annotations

import pytest

from orders.actors import Actor
from orders.exceptions import ValidationFailed
from orders.memberships import AlreadyMember, LastManager, add_member, change_role, remove_member
from orders.models import MembershipEvent, MembershipRole, MerchantMembership
from tests.orders.factories import MembershipFactory, MerchantFactory, UserFactory

pytestmark = pytest.mark.django_db
MANAGER, OPERATOR, VIEWER = MembershipRole.MANAGER, MembershipRole.OPERATOR, MembershipRole.VIEWER


@pytest.fixture
def merchant():
    return MerchantFactory()


@pytest.fixture
def boss(merchant):
    return MembershipFactory(merchant=merchant, role=MANAGER)


def actor_of(membership) -> Actor:
    return Actor.merchant(membership.user)


def test_add_member_creates_the_membership_and_records_it(merchant, boss):
    user = UserFactory()
    membership = add_member(merchant=merchant, user=user, role=OPERATOR, actor=actor_of(boss))
    assert (membership.user_id, membership.role) == (user.pk, OPERATOR)
    event = MembershipEvent.objects.get()
    assert (event.kind, event.user_id, event.actor_id, event.to_role) == ("added", user.pk, boss.user_id, OPERATOR)


def test_add_member_refuses_an_existing_member(merchant, boss):
    with pytest.raises(AlreadyMember):
        add_member(merchant=merchant, user=boss.user, role=VIEWER, actor=actor_of(boss))
    assert MembershipEvent.objects.count() == 0


def test_add_member_refuses_an_inactive_account(merchant, boss):
    with pytest.raises(ValidationFailed):
        add_member(merchant=merchant, user=UserFactory(is_active=False), role=VIEWER, actor=actor_of(boss))


def test_add_member_refuses_an_unknown_role(merchant, boss):
    with pytest.raises(ValidationFailed):
        add_member(merchant=merchant, user=UserFactory(), role="owner", actor=actor_of(boss))


def test_change_role_to_the_same_role_records_nothing(merchant, boss):
    change_role(membership=boss, role=MANAGER, actor=actor_of(boss))
    assert MembershipEvent.objects.count() == 0


def test_the_last_manager_cannot_be_demoted(merchant, boss):
    with pytest.raises(LastManager):
        change_role(membership=boss.pk, role=OPERATOR, actor=actor_of(boss))
    assert MerchantMembership.objects.get(pk=boss.pk).role == MANAGER


def test_the_last_manager_cannot_be_removed(merchant, boss):
    with pytest.raises(LastManager):
        remove_member(membership=boss, actor=actor_of(boss))
    assert MerchantMembership.objects.filter(pk=boss.pk).exists()


def test_an_inactive_second_manager_does_not_count(merchant, boss):
    MembershipFactory(merchant=merchant, role=MANAGER, user=UserFactory(is_active=False))
    with pytest.raises(LastManager):
        remove_member(membership=boss, actor=actor_of(boss))


def test_a_manager_of_another_merchant_does_not_count(merchant, boss):
    MembershipFactory(merchant=MerchantFactory(), role=MANAGER)
    with pytest.raises(LastManager):
        change_role(membership=boss, role=VIEWER, actor=actor_of(boss))


def test_with_two_managers_one_may_leave(merchant, boss):
    MembershipFactory(merchant=merchant, role=MANAGER)
    remove_member(membership=boss, actor=actor_of(boss))
    event = MembershipEvent.objects.get()
    assert (event.kind, event.from_role, event.username) == ("removed", MANAGER, boss.user.get_username())


def test_membership_events_are_append_only(merchant, boss):
    add_member(merchant=merchant, user=UserFactory(), role=VIEWER, actor=actor_of(boss))
    event = MembershipEvent.objects.get()
    event.to_role = MANAGER
    with pytest.raises(ValueError):
        event.save()


def test_the_record_keeps_the_names_after_the_account_is_deleted(merchant, boss):
    user = UserFactory(username="temp")
    add_member(merchant=merchant, user=user, role=VIEWER, actor=actor_of(boss))
    user.delete()
    event = MembershipEvent.objects.get()
    assert (event.user_id, event.username) == (None, "temp")
