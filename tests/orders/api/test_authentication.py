"""Token authentication: DRF's tokens and answers, with the lookup compiled once."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders.models import MerchantMembership
from tests.orders.factories import MembershipFactory

pytestmark = pytest.mark.django_db
ORDERS = "/api/v1/orders/"


def client_with(key: str, **headers) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}", **headers)
    return client


@pytest.fixture
def member(merchant):
    return MembershipFactory(merchant=merchant, role=MerchantMembership.Role.VIEWER).user


def test_a_valid_token_authenticates_its_user(member):
    token = Token.objects.create(user=member)

    response = client_with(token.key).get(ORDERS)

    assert response.status_code == 200
    assert response.wsgi_request.user == member
    assert response.renderer_context["request"].auth.key == token.key


def test_an_unknown_token_answers_401_in_the_error_shape(member):
    Token.objects.create(user=member)

    response = client_with("0" * 40).get(ORDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid token."
    assert response["WWW-Authenticate"] == "Token"


def test_the_token_of_an_inactive_user_answers_401(member):
    token = Token.objects.create(user=member)
    member.is_active = False
    member.save(update_fields=["is_active"])

    response = client_with(token.key).get(ORDERS)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."


def test_a_deleted_token_stops_working_at_once(member):
    token = Token.objects.create(user=member)
    assert client_with(token.key).get(ORDERS).status_code == 200

    token.delete()

    assert client_with(token.key).get(ORDERS).status_code == 401


def test_the_refusal_is_in_the_requests_language(member):
    response = client_with("0" * 40, HTTP_ACCEPT_LANGUAGE="zh-hans").get(ORDERS)

    assert response.json()["error"]["message"] == "令牌无效。"
