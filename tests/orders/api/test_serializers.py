"""Serializers that build their fields once per class (`FieldsBuiltOnce`)."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from orders.api.serializers import FieldsBuiltOnce, OrderCreateSerializer, OrderDetailSerializer
from orders.models import Order
from tests.orders.factories import OrderFactory, PaymentAttemptFactory

pytestmark = pytest.mark.django_db


class FreshOrderDetail(OrderDetailSerializer):
    """The same serializer with DRF's own field building, for comparison."""

    def get_fields(self) -> dict:
        return super(FieldsBuiltOnce, self).get_fields()


def test_an_order_reads_the_same_as_with_fields_built_for_every_instance():
    order = OrderFactory()
    PaymentAttemptFactory(order=order)
    PaymentAttemptFactory(order=order)
    order = Order.objects.select_related("merchant").prefetch_related("attempts").get(pk=order.pk)

    assert OrderDetailSerializer(order).data == FreshOrderDetail(order).data
    assert len(OrderDetailSerializer(order).data["attempts"]) == 2


def test_each_instance_has_its_own_fields_bound_to_itself():
    first, second = OrderDetailSerializer(), OrderDetailSerializer()

    for name, field in first.fields.items():
        other = second.fields[name]
        assert field is not other
        assert field.parent is first and other.parent is second
    # The nested list of attempts carries a child serializer of its own.
    assert first.fields["attempts"].child is not second.fields["attempts"].child
    assert first.fields["attempts"].child.parent is first.fields["attempts"]


def test_the_built_fields_stay_unbound_for_the_next_instance():
    OrderDetailSerializer().fields  # noqa: B018 - builds and binds

    for field in OrderDetailSerializer._fields_built_once.values():
        assert getattr(field, "parent", None) is None
        assert getattr(field, "field_name", None) is None


def test_model_fields_are_mapped_once_per_class(monkeypatch):
    OrderDetailSerializer().fields  # noqa: B018 - the class's fields exist from here on
    calls = []
    original = serializers.ModelSerializer.build_field
    monkeypatch.setattr(serializers.ModelSerializer, "build_field",
                        lambda self, *args: calls.append(args[0]) or original(self, *args))

    for _ in range(3):
        OrderDetailSerializer().fields  # noqa: B018

    assert calls == []


def test_a_subclass_builds_its_own_fields_not_its_parents():
    class WithNote(OrderCreateSerializer):
        note = serializers.CharField(required=False)

    OrderCreateSerializer().fields  # noqa: B018
    assert "note" in WithNote().fields
    assert "note" not in OrderCreateSerializer().fields


def test_validation_errors_do_not_leak_between_instances():
    bad = OrderCreateSerializer(data={"reference": "", "amount": "x"})
    good = OrderCreateSerializer(data={"reference": "R-1", "amount": "12.00", "currency": "cny",
                                       "customer_name": "Li Wei", "customer_email": "li@example.com"})

    assert not bad.is_valid()
    assert good.is_valid(), good.errors
    assert good.validated_data["currency"] == "CNY"
    assert set(bad.errors) >= {"reference", "amount", "currency", "customer_name", "customer_email"}
