"""The demo's merchant logins: one user per role at the first merchant, and one in two merchants."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from orders import demo
from orders.models import MerchantMembership

pytestmark = pytest.mark.django_db


def ensure():
    merchants = demo.ensure_demo_merchants(now=timezone.now())
    return demo.ensure_demo_users(merchant=merchants[0])


def memberships(username: str) -> list[tuple[str, str]]:
    return sorted(MerchantMembership.objects.filter(user__username=username)
                  .values_list("merchant__code", "role"))


def test_the_demo_has_a_merchant_user_for_each_role():
    ensure()
    first = demo.DEMO_MERCHANTS[0].code
    assert memberships("viewer") == [(first, "viewer")]
    assert memberships("operator") == [(first, "operator")]
    assert memberships("manager") == [(first, "manager")]


def test_the_demo_partner_belongs_to_two_merchants_with_different_roles():
    ensure()
    assert memberships("partner") == [("jade-leaf-tea", "operator"), ("panda-mart", "manager")]
    assert get_user_model().objects.get(username="partner").check_password("partner-demo")


def test_creating_the_demo_logins_twice_changes_nothing():
    ensure()
    before = sorted(MerchantMembership.objects.values_list("user__username", "merchant__code", "role"))
    ensure()
    assert sorted(MerchantMembership.objects.values_list("user__username", "merchant__code", "role")) == before


def test_up_prints_the_portal_address_and_the_merchant_logins():
    from io import StringIO

    from backoffice.management.commands.up import Command

    out = StringIO()
    Command(stdout=out).banner("127.0.0.1", 8000, sandbox_port=None)
    text = out.getvalue()
    assert "http://127.0.0.1:8000/merchant/" in text
    for username in ("manager", "operator", "viewer", "partner"):
        assert f"{username}-demo" in text
