from __future__ import annotations

import itertools
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from orders import services
from orders.actors import Actor
from orders.models import Merchant, MerchantMembership, Order, PaymentAttempt
from orders.states import ATTEMPT_OPEN, AttemptStatus, OrderStatus


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


# --- reaching a status through the services -------------------------------------------------
# Tests never assign `status`: they walk a legal path through `orders.services`, so the
# single write path is exercised on the way to every starting state.

SETUP_ACTOR = Actor.system("test setup")

# The legal walk from `submitted` to each order status. "payment_pending" starts a payment
# attempt; "paid" succeeds the open attempt and marks the order paid from it; "payment_failed"
# fails the open attempt first, as a provider would.
ORDER_PATHS: dict[str, tuple[str, ...]] = {
    OrderStatus.SUBMITTED: (),
    OrderStatus.PAYMENT_PENDING: (OrderStatus.PAYMENT_PENDING,),
    OrderStatus.PAYMENT_FAILED: (OrderStatus.PAYMENT_PENDING, OrderStatus.PAYMENT_FAILED),
    OrderStatus.PAID: (OrderStatus.PAYMENT_PENDING, OrderStatus.PAID),
    OrderStatus.CONFIRMED: (OrderStatus.PAYMENT_PENDING, OrderStatus.PAID, OrderStatus.CONFIRMED),
    OrderStatus.REFUNDED: (OrderStatus.PAYMENT_PENDING, OrderStatus.PAID, OrderStatus.REFUNDED),
    OrderStatus.CANCELLED: (OrderStatus.CANCELLED,),
    OrderStatus.EXPIRED: (OrderStatus.EXPIRED,),
}


# A prefix of its own, so these never collide with OrderFactory's references.
_references = itertools.count(1)


def submitted_order(
    *,
    merchant: Merchant | None = None,
    reference: str | None = None,
    amount: Decimal = Decimal("128.00"),
    currency: str = "CNY",
    actor: Actor = SETUP_ACTOR,
) -> Order:
    """A new order, created by `services.create_order` (so it has its `created` event)."""
    return services.create_order(
        merchant=merchant or MerchantFactory(),
        reference=reference or f"SVC-{next(_references):06d}",
        amount=amount,
        currency=currency,
        customer_name="Li Wei",
        customer_email="li.wei@example.com",
        actor=actor,
    )


def _open_attempt(order: Order) -> PaymentAttempt:
    return order.attempts.filter(status__in=sorted(ATTEMPT_OPEN)).latest("pk")


def _step(order: Order, to: str) -> None:
    if to == OrderStatus.PAYMENT_PENDING:
        services.create_payment_attempt(order=order, provider="sandbox", actor=SETUP_ACTOR)
    elif to == OrderStatus.PAID:
        attempt = services.transition_attempt(
            attempt=_open_attempt(order), to=AttemptStatus.SUCCEEDED, actor=SETUP_ACTOR
        )
        services.mark_order_paid(attempt=attempt, actor=SETUP_ACTOR)
    elif to == OrderStatus.PAYMENT_FAILED:
        services.transition_attempt(
            attempt=_open_attempt(order), to=AttemptStatus.FAILED, actor=SETUP_ACTOR, failure_code="card_declined"
        )
        services.transition_order(order=order, to=to, actor=SETUP_ACTOR)
    else:
        services.transition_order(order=order, to=to, actor=SETUP_ACTOR)


def order_in_status(status: str, *, with_attempt: bool = False, **order_kwargs) -> Order:
    """An order brought to `status` along a legal path, freshly read from the database.

    With `with_attempt`, cancelled and expired orders are reached through payment_pending,
    so they own a payment attempt (still open) like orders in the other later states do.
    """
    path = ORDER_PATHS[status]
    if with_attempt and status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        path = (OrderStatus.PAYMENT_PENDING, status)
    order = submitted_order(**order_kwargs)
    for to in path:
        _step(order, to)
    return Order.objects.get(pk=order.pk)


def attempt_in_status(status: str, *, order: Order | None = None) -> PaymentAttempt:
    """A payment attempt started by the services and moved from `initiated` to `status`."""
    order = order or submitted_order()
    attempt = services.create_payment_attempt(order=order, provider="sandbox", actor=SETUP_ACTOR)
    if status != AttemptStatus.INITIATED:
        services.transition_attempt(attempt=attempt, to=status, actor=SETUP_ACTOR)
    return PaymentAttempt.objects.get(pk=attempt.pk)
