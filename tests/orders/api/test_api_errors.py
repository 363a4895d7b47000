"""The one error shape: validation, auth, not found, throttling, body size, domain errors."""

from __future__ import annotations

import pytest
from django.utils import translation
from rest_framework.test import APIClient

from orders.models import MerchantMembership, Order
from tests.orders.engine_helpers import new_order
from tests.orders.factories import MembershipFactory, MerchantFactory

pytestmark = pytest.mark.django_db
ORDERS = "/api/v1/orders/"


@pytest.fixture
def operator(merchant):
    return MembershipFactory(merchant=merchant, role=MerchantMembership.Role.OPERATOR).user


@pytest.fixture
def api(operator):
    client = APIClient()
    client.force_authenticate(operator)
    return client


def payload(**overrides) -> dict:
    return {"reference": "WEB-1", "amount": "10.00", "currency": "CNY", "customer_name": "Li Wei",
            "customer_email": "li.wei@example.com", **overrides}


def assert_shape(body: dict) -> dict:
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    return body["error"]


def test_unknown_currency_is_refused_by_the_service_beside_its_field(api):
    response = api.post(ORDERS, payload(currency="XYZ"), format="json")
    assert response.status_code == 400
    error = assert_shape(response.json())
    assert error["code"] == "validation_failed"
    assert error["fields"] == {"currency": [error["message"]]}
    assert not Order.objects.exists()


def test_too_many_decimal_places_for_the_currency_names_the_amount(api):
    response = api.post(ORDERS, payload(amount="12.345", currency="CNY"), format="json")
    assert response.status_code == 400
    assert list(assert_shape(response.json())["fields"]) == ["amount"]
    assert not Order.objects.exists()


def test_negative_amount_names_the_field(api):
    response = api.post(ORDERS, payload(amount="-5.00"), format="json")
    assert response.status_code == 400
    error = assert_shape(response.json())
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["amount"]


def test_amount_as_a_json_number_is_refused(api):
    response = api.post(ORDERS, payload(amount=10.5), format="json")
    assert response.status_code == 400
    assert "amount" in assert_shape(response.json())["fields"]


def test_too_long_reference_names_the_field(api):
    response = api.post(ORDERS, payload(reference="R" * 65), format="json")
    assert response.status_code == 400
    assert "reference" in assert_shape(response.json())["fields"]


def test_missing_fields_are_all_listed(api):
    response = api.post(ORDERS, {}, format="json")
    fields = assert_shape(response.json())["fields"]
    assert {"reference", "amount", "currency", "customer_name", "customer_email"} <= set(fields)


def test_malformed_json_answers_400(api):
    response = api.post(ORDERS, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert assert_shape(response.json())["code"] == "parse_error"


def test_body_over_256_kib_answers_413(api):
    response = api.post(ORDERS, payload(shipping_address="x" * (300 * 1024)), format="json")
    assert response.status_code == 413
    assert assert_shape(response.json())["code"] == "body_too_large"


def test_unknown_api_path_answers_json_404(api):
    response = api.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert assert_shape(response.json())["code"] == "not_found"


def test_another_merchants_order_is_not_found_in_the_shape(api):
    theirs = new_order(merchant=MerchantFactory(code="globex"))
    response = api.get(f"{ORDERS}{theirs.pk}/")
    assert response.status_code == 404
    assert assert_shape(response.json())["code"] == "not_found"


def test_viewer_write_is_403_in_the_shape(merchant):
    viewer = MembershipFactory(merchant=merchant, role=MerchantMembership.Role.VIEWER).user
    client = APIClient()
    client.force_authenticate(viewer)
    response = client.post(ORDERS, payload(), format="json")
    assert response.status_code == 403
    assert_shape(response.json())


def test_session_writes_need_csrf(operator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(ORDERS, payload(), format="json")
    assert response.status_code == 403
    assert "CSRF" in assert_shape(response.json())["message"]


def test_writes_are_throttled_with_429(api, settings):
    settings.API_WRITE_RATE = "2/min"
    for n in range(2):
        assert api.post(ORDERS, payload(reference=f"T-{n}"), format="json").status_code == 201
    response = api.post(ORDERS, payload(reference="T-3"), format="json")
    assert response.status_code == 429
    assert assert_shape(response.json())["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_reads_are_not_throttled(api, settings):
    settings.API_WRITE_RATE = "1/min"
    assert all(api.get(ORDERS).status_code == 200 for _ in range(3))


def test_messages_follow_the_request_language(api):
    # The message is whatever gettext gives in the active language (catalogs are added later).
    response = api.get(f"{ORDERS}999999/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    with translation.override("zh-hans"):
        expected = translation.gettext("Not found.")
    assert response.json()["error"]["message"] == expected
