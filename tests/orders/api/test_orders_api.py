"""The REST API's orders endpoints: scoping, roles, services, pagination, query counts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders import services
from orders.actors import Actor
from orders.causes import Cause
from orders.models import MerchantMembership, Order, PaymentApproval
from orders.states import OrderStatus
from tests.orders.api.helpers import client_for, member, staff_with
from tests.orders.engine_helpers import flag_order, new_order, pending_order
from tests.orders.factories import StaffUserFactory

pytestmark = pytest.mark.django_db
Role = MerchantMembership.Role
ORDERS = "/api/v1/orders/"


def staff(*codenames: str):
    return staff_with("orders", *codenames)


def order_payload(**overrides) -> dict:
    return {"reference": "WEB-1001", "amount": "128.00", "currency": "CNY", "customer_name": "Li Wei",
            "customer_email": "li.wei@example.com", **overrides}


# --- list and retrieve ---------------------------------------------------------------------------


def test_list_shows_only_the_users_merchants_orders(merchant, other_merchant):
    mine = new_order(merchant=merchant)
    new_order(merchant=other_merchant)
    response = client_for(member(merchant, Role.VIEWER)).get(ORDERS)
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [mine.pk]


def test_staff_see_every_merchants_orders(merchant, other_merchant):
    ids = {new_order(merchant=merchant).pk, new_order(merchant=other_merchant).pk}
    response = client_for(StaffUserFactory()).get(ORDERS)
    assert {row["id"] for row in response.json()["results"]} == ids


def test_retrieve_another_merchants_order_answers_404(merchant, other_merchant):
    theirs = new_order(merchant=other_merchant)
    response = client_for(member(merchant)).get(f"{ORDERS}{theirs.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_retrieve_includes_attempts(merchant):
    order, attempt = pending_order(merchant=merchant)
    body = client_for(member(merchant, Role.VIEWER)).get(f"{ORDERS}{order.pk}/").json()
    assert body["amount"] == "128.00"
    assert [a["id"] for a in body["attempts"]] == [attempt.pk]
    assert body["diagnosis"] is None  # not unreturned: nothing to diagnose


def test_retrieve_includes_the_diagnosis_of_an_unreturned_order(merchant):
    order = new_order(merchant=merchant, submitted_at=timezone.now() - timedelta(hours=1))
    diagnosis = client_for(member(merchant, Role.VIEWER)).get(f"{ORDERS}{order.pk}/").json()["diagnosis"]
    assert diagnosis["cause"] == Cause.NO_PAYMENT_STARTED
    assert diagnosis["category"] == "customer"
    assert diagnosis["summary"] and diagnosis["recommended_action"]
    assert diagnosis["next_check_at"] is None


def test_anonymous_requests_answer_401_in_the_error_shape():
    response = APIClient().get(ORDERS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_token_authentication_works(merchant):
    user = member(merchant)
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(ORDERS).status_code == 200


# --- filters -------------------------------------------------------------------------------------


def test_filter_unreturned_and_cause(merchant):
    flagged = new_order(merchant=merchant)
    flag_order(flagged, Cause.NO_PAYMENT_STARTED)
    new_order(merchant=merchant)
    client = client_for(member(merchant))
    assert [r["id"] for r in client.get(ORDERS, {"unreturned": "true"}).json()["results"]] == [flagged.pk]
    assert [r["id"] for r in client.get(ORDERS, {"cause": Cause.NO_PAYMENT_STARTED}).json()["results"]] == [flagged.pk]


def test_filter_merchant_code_cannot_reach_another_merchant(merchant, other_merchant):
    new_order(merchant=other_merchant)
    response = client_for(member(merchant)).get(ORDERS, {"merchant": "globex"})
    assert response.json()["results"] == []


def test_search_by_exact_reference(merchant):
    wanted = new_order(merchant=merchant, reference="FIND-ME")
    new_order(merchant=merchant)
    response = client_for(member(merchant)).get(ORDERS, {"search": "FIND-ME"})
    assert [r["id"] for r in response.json()["results"]] == [wanted.pk]


def test_invalid_filter_value_answers_400_in_the_shape(merchant):
    response = client_for(member(merchant)).get(ORDERS, {"cause": "no-such-cause"})
    assert response.status_code == 400
    assert "cause" in response.json()["error"]["fields"]


# --- pagination and query counts -------------------------------------------------------------------


def test_cursor_pagination_walks_every_order_once(merchant):
    ids = {new_order(merchant=merchant).pk for _ in range(5)}
    client = client_for(member(merchant))
    seen, url = [], f"{ORDERS}?page_size=2"
    while url:
        body = client.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(ids)


def test_page_size_is_capped_at_200(merchant):
    new_order(merchant=merchant)
    response = client_for(member(merchant)).get(ORDERS, {"page_size": 10_000})
    assert response.status_code == 200


@pytest.mark.parametrize("user_kind", ["staff", "merchant"])
def test_list_query_count_does_not_grow_with_orders(merchant, other_merchant, django_assert_num_queries, user_kind):
    user = StaffUserFactory() if user_kind == "staff" else member(merchant)
    new_order(merchant=other_merchant)
    client = client_for(user)
    new_order(merchant=merchant)
    with django_assert_num_queries(1) as one:
        client.get(ORDERS)
    for _ in range(19):
        new_order(merchant=merchant)
    with django_assert_num_queries(len(one.captured_queries)):
        response = client.get(ORDERS)
    assert len(response.json()["results"]) == (21 if user_kind == "staff" else 20)


# --- create ---------------------------------------------------------------------------------------


def test_operator_creates_an_order_for_their_merchant(merchant):
    response = client_for(member(merchant)).post(ORDERS, order_payload(), format="json")
    assert response.status_code == 201
    order = Order.objects.get(pk=response.json()["id"])
    assert (order.merchant, order.amount, order.status) == (merchant, Decimal("128.00"), OrderStatus.SUBMITTED)
    assert response["Location"].endswith(f"/api/v1/orders/{order.pk}/")


def test_create_for_another_merchant_is_refused(merchant, other_merchant):
    response = client_for(member(merchant)).post(ORDERS, order_payload(merchant="globex"), format="json")
    assert response.status_code == 400
    assert "merchant" in response.json()["error"]["fields"]
    assert not Order.objects.filter(merchant=other_merchant).exists()


def test_viewer_cannot_create(merchant):
    response = client_for(member(merchant, Role.VIEWER)).post(ORDERS, order_payload(), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_staff_must_name_the_merchant(merchant):
    response = client_for(StaffUserFactory()).post(ORDERS, order_payload(), format="json")
    assert response.status_code == 400
    assert "merchant" in response.json()["error"]["fields"]


def test_staff_create_for_any_merchant(other_merchant):
    response = client_for(StaffUserFactory()).post(ORDERS, order_payload(merchant="globex"), format="json")
    assert response.status_code == 201
    assert response.json()["merchant"] == "globex"


def test_duplicate_reference_answers_409_with_existing_id(merchant):
    existing = new_order(merchant=merchant, reference="WEB-1001")
    response = client_for(member(merchant)).post(ORDERS, order_payload(), format="json")
    assert response.status_code == 409
    assert response.json()["existing_id"] == existing.pk
    assert response.json()["error"]["code"] == "duplicate_reference"


# --- payment attempts ----------------------------------------------------------------------------


def test_operator_starts_a_payment_attempt(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant)).post(
        f"{ORDERS}{order.pk}/payment-attempts/", {"provider": "sandbox", "provider_reference": "sbx_1"}, format="json"
    )
    assert response.status_code == 201
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAYMENT_PENDING


def test_attempts_list(merchant):
    order, attempt = pending_order(merchant=merchant)
    response = client_for(member(merchant, Role.VIEWER)).get(f"{ORDERS}{order.pk}/payment-attempts/")
    assert [row["id"] for row in response.json()] == [attempt.pk]


def test_attempts_of_another_merchants_order_answer_404(merchant, other_merchant):
    order = new_order(merchant=other_merchant)
    client = client_for(member(merchant))
    assert client.get(f"{ORDERS}{order.pk}/payment-attempts/").status_code == 404
    response = client.post(f"{ORDERS}{order.pk}/payment-attempts/", {"provider": "sandbox"}, format="json")
    assert response.status_code == 404


def test_viewer_cannot_start_an_attempt(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant, Role.VIEWER)).post(
        f"{ORDERS}{order.pk}/payment-attempts/", {"provider": "sandbox"}, format="json"
    )
    assert response.status_code == 403


def test_attempt_on_a_cancelled_order_answers_409(merchant):
    order = new_order(merchant=merchant)
    services.staff_cancel_order(order=order, reason="test", actor=Actor.system())
    response = client_for(member(merchant)).post(
        f"{ORDERS}{order.pk}/payment-attempts/", {"provider": "sandbox"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"


# --- timeline ------------------------------------------------------------------------------------


def test_timeline_hides_internal_entries_from_merchant_users(merchant):
    order = new_order(merchant=merchant)
    services.add_staff_note(order=order, text="customer called", actor=Actor.staff(StaffUserFactory()))
    entries = client_for(member(merchant)).get(f"{ORDERS}{order.pk}/timeline/").json()
    assert entries and not any(entry["internal"] for entry in entries)


def test_timeline_shows_internal_entries_to_staff(merchant):
    order = new_order(merchant=merchant)
    services.add_staff_note(order=order, text="customer called", actor=Actor.staff(StaffUserFactory()))
    entries = client_for(StaffUserFactory()).get(f"{ORDERS}{order.pk}/timeline/").json()
    assert any(entry["kind"] == "note" and entry["internal"] for entry in entries)


def test_timeline_of_another_merchants_order_answers_404(merchant, other_merchant):
    order = new_order(merchant=other_merchant)
    assert client_for(member(merchant)).get(f"{ORDERS}{order.pk}/timeline/").status_code == 404


# --- check now and cancel -------------------------------------------------------------------------


def test_operator_can_check_now(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant)).post(f"{ORDERS}{order.pk}/check-now/")
    assert response.status_code == 200
    assert response.json()["checked"] == 0


def test_viewer_cannot_check_now(merchant):
    order = new_order(merchant=merchant)
    assert client_for(member(merchant, Role.VIEWER)).post(f"{ORDERS}{order.pk}/check-now/").status_code == 403


def test_staff_without_the_permission_cannot_check_now(merchant):
    order = new_order(merchant=merchant)
    assert client_for(staff()).post(f"{ORDERS}{order.pk}/check-now/").status_code == 403
    assert client_for(staff("check_now")).post(f"{ORDERS}{order.pk}/check-now/").status_code == 200


def test_check_now_on_another_merchants_order_answers_404(merchant, other_merchant):
    order = new_order(merchant=other_merchant)
    assert client_for(member(merchant)).post(f"{ORDERS}{order.pk}/check-now/").status_code == 404


def test_manager_cancels_with_a_reason(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant, Role.MANAGER)).post(
        f"{ORDERS}{order.pk}/cancel/", {"reason": "customer asked"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == OrderStatus.CANCELLED


def test_cancel_needs_a_reason(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant)).post(f"{ORDERS}{order.pk}/cancel/", {}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]


def test_cancel_after_money_was_taken_answers_409_and_changes_nothing(merchant):
    order, attempt = pending_order(merchant=merchant)
    type(attempt).objects.filter(pk=attempt.pk).update(status="succeeded")

    response = client_for(member(merchant, Role.MANAGER)).post(
        f"{ORDERS}{order.pk}/cancel/", {"reason": "customer asked"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "money_taken"
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAYMENT_PENDING


def test_viewer_cannot_cancel(merchant):
    order = new_order(merchant=merchant)
    response = client_for(member(merchant, Role.VIEWER)).post(
        f"{ORDERS}{order.pk}/cancel/", {"reason": "x"}, format="json"
    )
    assert response.status_code == 403
    assert Order.objects.get(pk=order.pk).status == OrderStatus.SUBMITTED


def test_cancel_another_merchants_order_answers_404(merchant, other_merchant):
    order = new_order(merchant=other_merchant)
    response = client_for(member(merchant)).post(f"{ORDERS}{order.pk}/cancel/", {"reason": "x"}, format="json")
    assert response.status_code == 404


def test_staff_cancel_needs_the_permission(merchant):
    order = new_order(merchant=merchant)
    response = client_for(staff()).post(f"{ORDERS}{order.pk}/cancel/", {"reason": "x"}, format="json")
    assert response.status_code == 403


# --- mark paid ---------------------------------------------------------------------------------


def test_staff_with_permission_mark_paid(merchant):
    order, attempt = pending_order(merchant=merchant)
    response = client_for(staff("mark_paid")).post(
        f"{ORDERS}{order.pk}/mark-paid/",
        {"reason": "bank statement", "provider_reference": attempt.provider_reference}, format="json",
    )
    assert response.status_code == 200
    assert response.json()["applied"] is True
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID


def test_mark_paid_above_the_limit_waits_for_approval(merchant):
    merchant.mark_paid_approval_above = Decimal("100.00")
    merchant.save()
    order, attempt = pending_order(merchant=merchant)
    response = client_for(staff("mark_paid")).post(
        f"{ORDERS}{order.pk}/mark-paid/",
        {"reason": "bank statement", "provider_reference": attempt.provider_reference}, format="json",
    )
    assert response.status_code == 202
    assert response.json()["approval"]["status"] == PaymentApproval.Status.PENDING
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAYMENT_PENDING


def test_merchant_manager_cannot_mark_paid(merchant):
    order, attempt = pending_order(merchant=merchant)
    response = client_for(member(merchant, Role.MANAGER)).post(
        f"{ORDERS}{order.pk}/mark-paid/", {"reason": "x", "provider_reference": attempt.provider_reference},
        format="json",
    )
    assert response.status_code == 403


def test_staff_without_the_permission_cannot_mark_paid(merchant):
    order, attempt = pending_order(merchant=merchant)
    response = client_for(staff()).post(
        f"{ORDERS}{order.pk}/mark-paid/", {"reason": "x", "provider_reference": attempt.provider_reference},
        format="json",
    )
    assert response.status_code == 403


def test_mark_paid_needs_provider_reference(merchant):
    order, _attempt = pending_order(merchant=merchant)
    response = client_for(staff("mark_paid")).post(f"{ORDERS}{order.pk}/mark-paid/", {"reason": "x"}, format="json")
    assert response.status_code == 400
    assert "provider_reference" in response.json()["error"]["fields"]


def test_mark_paid_of_another_merchants_order_by_merchant_user_is_refused(merchant, other_merchant):
    order, attempt = pending_order(merchant=other_merchant)
    response = client_for(member(merchant, Role.MANAGER)).post(
        f"{ORDERS}{order.pk}/mark-paid/", {"reason": "x", "provider_reference": attempt.provider_reference},
        format="json",
    )
    assert response.status_code in (403, 404)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAYMENT_PENDING


# --- summary ---------------------------------------------------------------------------------------


def test_summary_counts_only_the_users_orders(merchant, other_merchant):
    mine = new_order(merchant=merchant)
    flag_order(mine, Cause.NO_PAYMENT_STARTED)
    theirs = new_order(merchant=other_merchant)
    flag_order(theirs, Cause.NO_PAYMENT_STARTED)
    body = client_for(member(merchant, Role.VIEWER)).get("/api/v1/unreturned/summary/").json()
    assert body["total"] == 1
    assert body["by_cause"] == {Cause.NO_PAYMENT_STARTED: 1}
    assert body["by_category"] == {"customer": 1}
    assert sum(body["by_age"].values()) == 1


def test_summary_for_staff_counts_everything_by_provider(merchant, other_merchant):
    for m in (merchant, other_merchant):
        order, _attempt = pending_order(merchant=m)
        flag_order(order, Cause.AWAITING_CUSTOMER_ACTION)
    body = client_for(StaffUserFactory()).get("/api/v1/unreturned/summary/").json()
    assert body["total"] == 2
    assert body["by_provider"] == {"sandbox": 2}


# --- schema ----------------------------------------------------------------------------------------


def test_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/orders/{order_id}/mark-paid/" in (tmp_path / "schema.yaml").read_text()


def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"cdn" not in response.content.lower()
