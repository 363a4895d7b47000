"""Hot-path statements (`orders.statements`): the same rows and objects as the ORM would give."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from orders import statements
from orders.models import IdempotencyKey, Merchant, Order, OrderEvent
from orders.states import OrderStatus
from tests.orders.factories import MembershipFactory, MerchantFactory, OrderFactory, UserFactory

pytestmark = pytest.mark.django_db


def new_order(merchant, reference="S-1") -> Order:
    now = timezone.now()
    return Order(merchant=merchant, reference=reference, amount=Decimal("12.50"), currency="CNY",
                 customer_name="Li Wei", customer_email="li@example.com", submitted_at=now, status_changed_at=now)


def new_event(order) -> OrderEvent:
    return OrderEvent(order=order, kind="created", actor_kind="merchant", message="Order submitted.",
                      data={"amount": "12.50"})


# --- insert and update ---


def test_insert_writes_the_row_with_its_defaults_and_sets_the_key():
    user = UserFactory()
    row = statements.insert(IdempotencyKey(owner=user, key="k-1", method="POST", path="/x/", request_fingerprint="f"))

    stored = IdempotencyKey.objects.get(pk=row.pk)
    assert not row._state.adding
    assert (stored.key, stored.status, stored.response_headers) == ("k-1", IdempotencyKey.Status.IN_PROGRESS, {})
    assert stored.created_at == row.created_at


def test_insert_of_a_duplicate_raises_integrity_error():
    user = UserFactory()
    statements.insert(IdempotencyKey(owner=user, key="k-1", method="POST", path="/x/", request_fingerprint="f"))

    with pytest.raises(IntegrityError), transaction.atomic():
        statements.insert(IdempotencyKey(owner=user, key="k-1", method="POST", path="/x/", request_fingerprint="g"))
    assert IdempotencyKey.objects.filter(owner=user).count() == 1


def test_update_prepares_values_as_their_fields_do():
    user = UserFactory()
    row = statements.insert(IdempotencyKey(owner=user, key="k-1", method="POST", path="/x/", request_fingerprint="f"))
    done_at = timezone.now()

    changed = statements.update(IdempotencyKey, row.pk, status=IdempotencyKey.Status.DONE, response_status=201,
                                response_headers={"Location": "/api/v1/orders/7/"}, completed_at=done_at)

    stored = IdempotencyKey.objects.get(pk=row.pk)
    assert changed == 1
    assert stored.response_headers == {"Location": "/api/v1/orders/7/"}
    assert (stored.status, stored.response_status, stored.completed_at) == ("done", 201, done_at)


def test_update_of_a_missing_row_changes_nothing():
    assert statements.update(IdempotencyKey, 987_654, status=IdempotencyKey.Status.DONE) == 0


# --- insert_with_event ---


def test_insert_with_event_writes_both_rows_linked():
    order = new_order(MerchantFactory())
    event = new_event(order)

    statements.insert_with_event(order, event, link="order_id")

    stored = Order.objects.get(pk=order.pk)
    assert stored.status == OrderStatus.SUBMITTED and stored.status_token == order.status_token
    assert list(OrderEvent.objects.filter(order=stored).values_list("pk", "data")) == [(event.pk, {"amount": "12.50"})]


def test_insert_with_event_writes_neither_row_when_the_order_is_refused():
    merchant = MerchantFactory()
    OrderFactory(merchant=merchant, reference="S-1")
    events_before = OrderEvent.objects.count()
    order = new_order(merchant, reference="S-1")

    with pytest.raises(IntegrityError):
        statements.insert_with_event(order, new_event(order), link="order_id")

    assert Order.objects.filter(merchant=merchant).count() == 1
    assert OrderEvent.objects.count() == events_before


def test_a_refused_insert_with_event_leaves_the_callers_transaction_usable():
    merchant = MerchantFactory()
    OrderFactory(merchant=merchant, reference="S-1")

    with transaction.atomic():
        order = new_order(merchant, reference="S-1")
        with pytest.raises(IntegrityError):
            statements.insert_with_event(order, new_event(order), link="order_id")
        assert Order.objects.filter(merchant=merchant).count() == 1


# --- PreparedQuery ---


def writable(user_id: int):
    return Merchant.objects.filter(memberships__user_id=user_id, memberships__role="operator").order_by("code")


def test_a_prepared_query_answers_what_the_queryset_answers_for_each_value():
    first, second = UserFactory(), UserFactory()
    for code in ("m-b", "m-a"):
        MembershipFactory(user=first, merchant=MerchantFactory(code=code, stuck_after=timedelta(minutes=7)),
                          role="operator")
    MembershipFactory(user=second, merchant=MerchantFactory(code="m-c"), role="viewer")
    prepared = statements.PreparedQuery(Merchant, writable, user_id=-1)

    assert prepared(user_id=first.pk) == list(writable(first.pk))
    assert [m.code for m in prepared(user_id=first.pk)] == ["m-a", "m-b"]
    assert prepared(user_id=first.pk)[0].stuck_after == timedelta(minutes=7)  # converted as the ORM converts
    assert prepared(user_id=second.pk) == []


def test_a_prepared_query_is_compiled_once():
    built = []
    prepared = statements.PreparedQuery(Merchant, lambda user_id: built.append(user_id) or writable(user_id),
                                        user_id=-1)

    for user in (UserFactory(), UserFactory(), UserFactory()):
        prepared(user_id=user.pk)

    assert built == [-1]


def test_a_stand_in_used_twice_is_refused():
    prepared = statements.PreparedQuery(
        Merchant, lambda user_id: Merchant.objects.filter(memberships__user_id=user_id, pk=user_id), user_id=-1
    )

    with pytest.raises(ValueError, match="appears 2 times"):
        prepared(user_id=1)


def test_a_queryset_with_related_rows_is_refused():
    prepared = statements.PreparedQuery(
        Order, lambda reference: Order.objects.select_related("merchant").filter(reference=reference), reference="?"
    )

    with pytest.raises(ValueError, match="plain model instances"):
        prepared(reference="S-1")


def test_a_prepared_query_needs_exactly_its_parameters():
    prepared = statements.PreparedQuery(Merchant, writable, user_id=-1)

    with pytest.raises(TypeError):
        prepared(user=1)


# --- models with save receivers ---


def test_a_model_with_save_receivers_is_inserted_by_save_so_they_run():
    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.key, created))

    post_save.connect(receiver, sender=IdempotencyKey)
    try:
        row = statements.insert(IdempotencyKey(owner=UserFactory(), key="k-9", method="POST", path="/x/",
                                               request_fingerprint="f"))
    finally:
        post_save.disconnect(receiver, sender=IdempotencyKey)

    assert seen == [("k-9", True)]
    assert IdempotencyKey.objects.filter(pk=row.pk).exists()


def test_an_order_and_its_event_go_through_save_when_the_event_has_receivers():
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.order_id)

    pre_save.connect(receiver, sender=OrderEvent)
    try:
        order = new_order(MerchantFactory())
        statements.insert_with_event(order, new_event(order), link="order_id")
    finally:
        pre_save.disconnect(receiver, sender=OrderEvent)

    assert seen == [order.pk]
    assert OrderEvent.objects.filter(order_id=order.pk).count() == 1
