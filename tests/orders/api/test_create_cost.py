"""Creating an order through the API: what it answers without reading the order back, and what it costs."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders.models import IdempotencyKey, MerchantMembership, OrderEvent
from tests.orders.factories import MembershipFactory, MerchantFactory

pytestmark = pytest.mark.django_db
ORDERS = "/api/v1/orders/"


def order_and_event_statements() -> int:
    """Statements that write the order and its event: one on PostgreSQL (a CTE), two elsewhere."""
    return 1 if connection.vendor == "postgresql" else 2


@pytest.fixture
def token_client(merchant):
    user = MembershipFactory(merchant=merchant, role=MerchantMembership.Role.OPERATOR).user
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def payload(reference: str, **overrides) -> dict:
    return {"reference": reference, "amount": "128.00", "currency": "CNY", "customer_name": "Li Wei",
            "customer_email": "li.wei@example.com", **overrides}


@pytest.mark.parametrize(("amount", "currency"), [("128.00", "CNY"), ("128", "CNY"), ("7.5", "CNY"), ("500", "JPY")])
def test_the_create_answer_is_the_order_as_read_back(token_client, amount, currency):
    created = token_client.post(ORDERS, payload("WEB-1", amount=amount, currency=currency), format="json")
    assert created.status_code == 201, created.json()
    fetched = token_client.get(created["Location"])
    assert created.json() == fetched.json()
    assert created.json()["attempts"] == [] and created.json()["diagnosis"] is None


def _queries_of_one_create(client, n: int, *, key: bool) -> int:
    headers = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())} if key else {}
    with CaptureQueriesContext(connection) as captured:
        response = client.post(ORDERS, payload(f"WEB-{key}-{n}"), format="json", **headers)
    assert response.status_code == 201, response.json()
    return len(captured)


def test_create_costs_the_same_few_statements_every_time(token_client):
    """Token, the merchants the user may write for (the permission and the merchant in one read),
    the key (insert, and the response stored after), the order and its event: no re-read of the
    order, no diagnosis queries, however many orders exist."""
    with_key = [_queries_of_one_create(token_client, n, key=True) for n in range(5)]
    without_key = [_queries_of_one_create(token_client, n, key=False) for n in range(5)]
    # Inside the test's transaction every atomic block is a savepoint and its release: two
    # statements each (the key's insert, the order with its event).
    assert with_key == [8 + order_and_event_statements()] * 5
    assert without_key == [4 + order_and_event_statements()] * 5
    assert IdempotencyKey.objects.filter(status=IdempotencyKey.Status.DONE).count() == 5
    assert OrderEvent.objects.filter(kind="created").count() == 10


def test_naming_one_of_two_own_merchants_costs_no_extra_statement(merchant):
    other = MerchantFactory()
    user = MembershipFactory(merchant=merchant, role=MerchantMembership.Role.OPERATOR).user
    MembershipFactory(merchant=other, user=user, role=MerchantMembership.Role.MANAGER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    with CaptureQueriesContext(connection) as captured:
        response = client.post(ORDERS, payload("TWO-1", merchant=other.code), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["merchant"] == other.code
    assert len(captured) == 4 + order_and_event_statements()
