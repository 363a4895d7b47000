"""Clients and users for API tests (the orders and the tickets API share them)."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from orders.models import MerchantMembership
from tests.orders.factories import MembershipFactory, StaffUserFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def member(merchant, role=MerchantMembership.Role.OPERATOR):
    return MembershipFactory(merchant=merchant, role=role).user


def staff_with(app_label: str, *codenames: str):
    """A staff user holding exactly these permissions of `app_label`."""
    user = StaffUserFactory()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))
    return user
