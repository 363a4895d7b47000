from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from orders.models import Merchant, MerchantMembership, Order, PaymentAttempt


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-for-tests")


class StaffUserFactory(UserFactory):
    is_staff = True


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"merchant-{n}")
    name = factory.LazyAttribute(lambda m: m.code.replace("-", " ").title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MerchantMembership

    user = factory.SubFactory(UserFactory)
    merchant = factory.SubFactory(MerchantFactory)
    role = MerchantMembership.Role.VIEWER


class OrderFactory(factory.django.DjangoModelFactory):
    """A freshly submitted order. Later states are reached through the services, never by
    setting `status` here, so tests exercise the single write path."""

    class Meta:
        model = Order

    merchant = factory.SubFactory(MerchantFactory)
    reference = factory.Sequence(lambda n: f"ORD-{n:06d}")
    customer_name = "Li Wei"
    customer_email = "li.wei@example.com"
    amount = Decimal("128.00")
    currency = "CNY"


class PaymentAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentAttempt

    order = factory.SubFactory(OrderFactory)
    provider = "sandbox"
    provider_reference = factory.Sequence(lambda n: f"pay_{n:08d}")
    idempotency_key = factory.Sequence(lambda n: f"idem-{n:08d}")
    amount = factory.LazyAttribute(lambda a: a.order.amount)
    currency = factory.LazyAttribute(lambda a: a.order.currency)
