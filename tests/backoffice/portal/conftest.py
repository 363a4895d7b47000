"""Merchants, their members by role, and URLs of the portal."""

from __future__ import annotations

import pytest
from django.db import connection, reset_queries
from django.urls import reverse

from orders.models import MembershipRole, Merchant
from tests.orders.factories import MembershipFactory, MerchantFactory, UserFactory

VIEWER, OPERATOR, MANAGER = MembershipRole.VIEWER, MembershipRole.OPERATOR, MembershipRole.MANAGER


def member(merchant: Merchant, role: str = OPERATOR, **user_fields):
    user = UserFactory(**user_fields)
    MembershipFactory(user=user, merchant=merchant, role=role)
    return user


def portal_url(name: str, merchant: Merchant, **kwargs) -> str:
    return reverse(f"portal:{name}", kwargs={"merchant_code": merchant.code, **kwargs})


@pytest.fixture
def merchant(db):
    return MerchantFactory(code="jade-tea", name="翠叶茶庄 Jade Tea")


@pytest.fixture
def other_merchant(db):
    return MerchantFactory(code="globex", name="Globex Goods")


@pytest.fixture
def viewer(merchant):
    return member(merchant, VIEWER, username="vera")


@pytest.fixture
def operator(merchant):
    return member(merchant, OPERATOR, username="otto")


@pytest.fixture
def manager(merchant):
    return member(merchant, MANAGER, username="mona")


@pytest.fixture
def as_user(client):
    """`as_user(user)` logs the test client in and returns it."""
    def log_in(user):
        client.force_login(user)
        return client
    return log_in


def queries_of(call) -> int:
    """How many queries `call()` runs. The connection's query log holds at most 9,000 entries
    and a long test session fills it (then a capture would count nothing): start it afresh."""
    reset_queries()
    count = 0

    def counter(execute, sql, params, many, context):
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counter):
        call()
    reset_queries()
    return count
