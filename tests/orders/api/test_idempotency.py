"""`Idempotency-Key` on API writes (orders.api.idempotency), through a tiny view of this module's own
that creates orders with `create_order`, so these tests do not depend on the real API's views."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import path
from django.utils import timezone
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView, exception_handler

from orders import services
from orders.actors import Actor
from orders.api.idempotency import IdempotentMixin
from orders.models import IdempotencyKey, Merchant, Order
from orders.schedules import SCHEDULES
from orders.tasks import purge_idempotency_keys
from tests.orders.api.helpers import client_for
from tests.orders.engine_helpers import run_in_threads
from tests.orders.factories import UserFactory


class CreateOrderView(IdempotentMixin, APIView):
    permission_classes = [IsAuthenticated]
    authentication_classes = [SessionAuthentication]
    parser_classes = [JSONParser, MultiPartParser]
    renderer_classes = [JSONRenderer]
    throttle_classes = []

    def get_exception_handler(self):
        # DRF's own: an unexpected exception propagates, whatever the project's handler does.
        return exception_handler

    def post(self, request):
        data = request.data
        if not data.get("reference"):
            return Response({"error": {"code": "invalid", "message": "reference", "fields": {}}}, status=400)
        if data.get("explode"):
            raise RuntimeError("the view failed")
        if data.get("server_error"):
            return Response({"error": {"code": "unavailable", "message": "x", "fields": {}}}, status=503)
        time.sleep(float(data.get("sleep", 0)))
        try:
            order = services.create_order(
                merchant=Merchant.objects.get(code=data["merchant"]),
                reference=data["reference"],
                amount=Decimal(data["amount"]),
                currency="CNY",
                customer_name="Li Lei",
                customer_email="li@example.com",
                actor=Actor.staff(request.user),
            )
        except services.DuplicateReference as exc:
            return Response({"error": {"code": exc.code, "message": exc.message, "fields": {}}}, status=409)
        return Response(
            {"id": order.pk, "reference": order.reference, "amount": str(order.amount)},
            status=201,
            headers={"Location": f"/api/orders/{order.pk}/", "X-Not-Kept": "1"},
        )


urlpatterns = [path("orders/", CreateOrderView.as_view())]
URL = "/orders/"

pytestmark = [pytest.mark.urls(__name__)]



@pytest.fixture
def user():
    return UserFactory()


def post(client, body: dict, key: str | None = "key-1"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(URL, body, format="json", headers=headers)


def body(reference: str = "R-1", amount: str = "10.00", **extra) -> dict:
    return {"merchant": "acme", "reference": reference, "amount": amount, **extra}


@pytest.mark.django_db
class TestReplay:
    def test_same_key_and_body_replays_the_first_response_and_creates_one_order(self, merchant, user):
        client = client_for(user)
        first = post(client, body())
        second = post(client, body())

        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second["Location"] == first["Location"] == f"/api/orders/{first.json()['id']}/"
        assert second["Idempotent-Replayed"] == "true"
        assert not first.has_header("Idempotent-Replayed")
        assert not second.has_header("X-Not-Kept")
        assert Order.objects.count() == 1
        row = IdempotencyKey.objects.get()
        assert (row.status, row.response_status, row.method, row.path) == ("done", 201, "POST", URL)
        assert row.completed_at is not None

    def test_json_key_order_and_whitespace_do_not_make_a_different_request(self, merchant, user):
        client = client_for(user)
        first = post(client, body())
        reordered = json.dumps({"amount": "10.00", "reference": "R-1", "merchant": "acme"}, indent=2)
        second = client.post(URL, reordered, content_type="application/json", headers={"Idempotency-Key": "key-1"})

        assert second.status_code == 201
        assert second.json() == first.json()
        assert second["Idempotent-Replayed"] == "true"

    def test_same_key_with_a_different_body_is_refused_and_changes_nothing(self, merchant, user):
        client = client_for(user)
        first = post(client, body())
        before = IdempotencyKey.objects.values().get()

        other = post(client, body(reference="R-2"))

        assert other.status_code == 422
        assert other.json() == {
            "error": {
                "code": "idempotency_key_reused",
                "message": "This Idempotency-Key was used with a different request.",
                "fields": {},
            }
        }
        assert list(Order.objects.values_list("reference", flat=True)) == ["R-1"]
        assert IdempotencyKey.objects.values().get() == before
        # The original is still replayed.
        assert post(client, body()).json() == first.json()

    def test_same_key_on_another_path_is_a_different_request(self, merchant, user):
        client = client_for(user)
        post(client, body())
        other = client.post(URL + "?dry_run=1", body(), format="json", headers={"Idempotency-Key": "key-1"})
        assert other.status_code == 422

    def test_without_a_key_requests_run_as_usual(self, merchant, user):
        client = client_for(user)
        first = post(client, body(), key=None)
        second = post(client, body(reference="R-2"), key=None)

        assert (first.status_code, second.status_code) == (201, 201)
        assert Order.objects.count() == 2
        assert not IdempotencyKey.objects.exists()

    def test_a_deterministic_4xx_is_kept_and_replayed(self, merchant, user):
        client = client_for(user)
        first = post(client, body(reference=""))
        second = post(client, body(reference=""))

        assert first.status_code == second.status_code == 400
        assert second.json() == first.json()
        assert second["Idempotent-Replayed"] == "true"

    def test_a_request_still_running_gets_409(self, merchant, user):
        client = client_for(user)
        post(client, body())
        IdempotencyKey.objects.update(status="in_progress", response_status=None, completed_at=None)

        again = post(client, body())

        assert again.status_code == 409
        assert again.json()["error"]["code"] == "idempotency_key_in_progress"
        assert again["Retry-After"] == "1"
        assert Order.objects.count() == 1


@pytest.mark.django_db
class TestKeysAreReleased:
    def test_an_exception_in_the_view_leaves_no_key_and_a_retry_runs(self, merchant, user):
        client = client_for(user)
        with pytest.raises(RuntimeError):
            post(client, body(explode=True))
        assert not IdempotencyKey.objects.exists()

    def test_a_5xx_leaves_no_key(self, merchant, user):
        client = client_for(user)
        assert post(client, body(server_error=True)).status_code == 503
        assert not IdempotencyKey.objects.exists()

    def test_a_retryable_4xx_is_not_kept(self, merchant, user):
        client = client_for(user)
        post(client, body(), key="first")
        conflict = post(client, body(), key="second")  # the reference exists: 409 from the view

        assert conflict.status_code == 409
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["first"]


@pytest.mark.django_db
class TestKeyValidationAndScope:
    @pytest.mark.parametrize("key", ["", "   ", "k" * 256])
    def test_an_empty_or_too_long_key_is_a_400(self, merchant, user, key):
        response = post(client_for(user), body(), key=key)

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "idempotency_key_invalid"
        assert response.json()["error"]["fields"] == {}
        assert not Order.objects.exists()

    def test_a_255_character_key_is_fine(self, merchant, user):
        assert post(client_for(user), body(), key="k" * 255).status_code == 201

    def test_keys_are_per_user(self, merchant, user):
        other_user = UserFactory()
        mine = post(client_for(user), body(reference="R-1"))
        theirs = post(client_for(other_user), body(reference="R-2"))

        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert not theirs.has_header("Idempotent-Replayed")
        assert Order.objects.count() == 2
        assert IdempotencyKey.objects.filter(key="key-1").count() == 2

    def test_an_anonymous_request_is_refused_before_a_key_is_taken(self, merchant):
        response = APIClient().post(URL, body(), format="json", headers={"Idempotency-Key": "key-1"})
        assert response.status_code in (401, 403)
        assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
class TestExpiry:
    def test_an_expired_key_is_a_new_request(self, merchant, user):
        client = client_for(user)
        with time_machine.travel(timezone.now() - timedelta(hours=25), tick=False):
            post(client, body(reference="R-1"))

        again = post(client, body(reference="R-2"))

        assert again.status_code == 201
        assert not again.has_header("Idempotent-Replayed")
        assert Order.objects.count() == 2
        assert IdempotencyKey.objects.get().request_fingerprint  # the new request's row

    def test_the_ttl_comes_from_settings(self, merchant, user, settings):
        settings.IDEMPOTENCY_KEY_TTL_HOURS = 1
        client = client_for(user)
        with time_machine.travel(timezone.now() - timedelta(hours=2), tick=False):
            post(client, body(reference="R-1"))
        assert post(client, body(reference="R-2")).status_code == 201

    def test_purge_deletes_only_keys_older_than_the_ttl(self, merchant, user):
        client = client_for(user)
        now = timezone.now()
        with time_machine.travel(now - timedelta(hours=30), tick=False):
            post(client, body(reference="R-1"), key="old-done")
            IdempotencyKey.objects.create(owner=user, key="old-stuck", method="POST", path=URL,
                                          request_fingerprint="x")
        with time_machine.travel(now - timedelta(hours=23), tick=False):
            post(client, body(reference="R-2"), key="recent")
        post(client, body(reference="R-3"), key="new")

        assert purge_idempotency_keys() == "deleted=2"
        assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["new", "recent"]
        assert Order.objects.count() == 3

    def test_purge_works_in_batches(self, user):
        old = timezone.now() - timedelta(hours=48)
        IdempotencyKey.objects.bulk_create(
            IdempotencyKey(owner=user, key=f"k{i}", method="POST", path=URL, request_fingerprint="x", created_at=old)
            for i in range(7)
        )
        from orders.api.idempotency import purge_expired_keys

        assert purge_expired_keys(batch_size=3) == 7
        assert not IdempotencyKey.objects.exists()

    def test_the_purge_is_scheduled(self):
        assert any(s["func"] == "orders.tasks.purge_idempotency_keys" for s in SCHEDULES)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sleep", ["0", "0.3"])
def test_concurrent_requests_with_one_key_create_one_order(on_postgres, merchant, user, sleep):
    def send():
        # With `sleep` the first request is still in the view while the others arrive (409s);
        # without, some arrive after it finished (replays).
        return post(client_for(user), body(sleep=sleep))

    responses = run_in_threads(*[send for _ in range(8)])

    assert not [r for r in responses if isinstance(r, BaseException)], responses
    assert Order.objects.count() == 1
    originals = [r for r in responses if r.status_code == 201 and not r.has_header("Idempotent-Replayed")]
    replays = [r for r in responses if r.status_code == 201 and r.has_header("Idempotent-Replayed")]
    busy = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1
    assert len(replays) + len(busy) == 7
    assert all(r.json() == originals[0].json() for r in replays)
    assert all(r.json()["error"]["code"] == "idempotency_key_in_progress" for r in busy)
    row = IdempotencyKey.objects.get()
    assert (row.status, row.response_status) == ("done", 201)
    # Once done, a retry is a replay.
    retry = post(client_for(user), body(sleep=sleep))
    assert (retry.status_code, retry["Idempotent-Replayed"]) == (201, "true")
    assert retry.json() == originals[0].json()



@pytest.mark.django_db
def test_a_multipart_form_with_session_authentication_is_fingerprinted(merchant, user):
    # The CSRF check reads the token from the parsed form: the raw body must be kept before that.
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    form = body(csrfmiddlewaretoken=_mask_cipher_secret(secret))
    first = client.post(URL, form, format="multipart", headers={"Idempotency-Key": "multi"})
    second = client.post(URL, form, format="multipart", headers={"Idempotency-Key": "multi"})

    assert (first.status_code, second.status_code) == (201, 201)
    assert second["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_a_body_too_large_to_fingerprint_is_a_413_and_takes_no_key(merchant, user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = post(client_for(user), body(padding="x" * 200))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert not IdempotencyKey.objects.exists()
