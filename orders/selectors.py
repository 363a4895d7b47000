"""Reads that scope data by user. Every object lookup in views and APIs goes through here,
so that changing an id in a URL can never reach another merchant's data."""

from __future__ import annotations

from django.db.models import QuerySet

from orders.models import Merchant, MerchantMembership, Order, PaymentAttempt


def _is_back_office(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


def merchants_visible_to(user) -> QuerySet[Merchant]:
    if _is_back_office(user):
        return Merchant.objects.all()
    if not (user and user.is_authenticated and user.is_active):
        return Merchant.objects.none()
    return Merchant.objects.filter(active=True, memberships__user=user)


def orders_visible_to(user) -> QuerySet[Order]:
    if _is_back_office(user):
        return Order.objects.all()
    return Order.objects.filter(merchant__in=merchants_visible_to(user))


def attempts_visible_to(user) -> QuerySet[PaymentAttempt]:
    return PaymentAttempt.objects.filter(order__in=orders_visible_to(user))


def membership_of(user, merchant: Merchant) -> MerchantMembership | None:
    if not (user and user.is_authenticated):
        return None
    return MerchantMembership.objects.filter(user=user, merchant=merchant, merchant__active=True).first()
