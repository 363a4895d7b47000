"""Reads that scope data by user. Every object lookup in views and APIs goes through here,
so that changing an id in a URL can never reach another merchant's data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Count, Q, QuerySet

from orders.models import MembershipRole, Merchant, MerchantMembership, Order, PaymentAttempt, PaymentCheck
from orders.statements import PreparedQuery

# Membership roles that may act (check now, cancel, tickets); a viewer only reads. A manager
# also manages the memberships of their merchant.
WRITE_ROLES = frozenset({MembershipRole.OPERATOR, MembershipRole.MANAGER})


def is_back_office(user) -> bool:
    """Staff see and act on every merchant, with the permissions of their groups."""
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


def merchants_visible_to(user) -> QuerySet[Merchant]:
    if is_back_office(user):
        return Merchant.objects.all()
    if not (user and user.is_authenticated and user.is_active):
        return Merchant.objects.none()
    return Merchant.objects.filter(active=True, memberships__user=user)


def orders_visible_to(user) -> QuerySet[Order]:
    if is_back_office(user):
        return Order.objects.all()
    return Order.objects.filter(merchant__in=merchants_visible_to(user))


def attempts_visible_to(user) -> QuerySet[PaymentAttempt]:
    return PaymentAttempt.objects.filter(order__in=orders_visible_to(user))


def membership_of(user, merchant: Merchant) -> MerchantMembership | None:
    if not (user and user.is_authenticated and user.is_active):
        return None
    return MerchantMembership.objects.filter(user=user, merchant=merchant, merchant__active=True).first()


def memberships_of(user) -> QuerySet[MerchantMembership]:
    """The user's memberships of active merchants, by merchant name (the merchant switcher)."""
    if not (user and user.is_authenticated and user.is_active):
        return MerchantMembership.objects.none()
    return (
        MerchantMembership.objects.filter(user=user, merchant__active=True)
        .select_related("merchant").order_by("merchant__name", "merchant__code")
    )


def writable_merchants(user) -> QuerySet[Merchant]:
    """Merchants the user may act for (all of them for staff)."""
    if is_back_office(user):
        return Merchant.objects.all()
    if not (user and user.is_authenticated and user.is_active):
        return Merchant.objects.none()
    return _writable_for_member(user.pk)


def _writable_for_member(user_id: int) -> QuerySet[Merchant]:
    return Merchant.objects.filter(active=True, memberships__user_id=user_id, memberships__role__in=sorted(WRITE_ROLES))


# `writable_merchants(user)[:2]` for a member, compiled once: the API asks it on every write.
_first_writable = PreparedQuery(Merchant, lambda user_id: _writable_for_member(user_id)[:2], user_id=-48_611)


def first_writable_merchants(user) -> list[Merchant]:
    """Up to two merchants the user may act for: whether there is one, and which when only one."""
    if is_back_office(user) or not (user and user.is_authenticated and user.is_active):
        return list(writable_merchants(user)[:2])
    return _first_writable(user_id=user.pk)


def can_write_for(user, merchant_id: int) -> bool:
    if is_back_office(user):
        return True
    if not (user and user.is_authenticated and user.is_active):
        return False
    return MerchantMembership.objects.filter(
        user=user, merchant_id=merchant_id, merchant__active=True, role__in=sorted(WRITE_ROLES)
    ).exists()


@dataclass(frozen=True)
class ProviderCheckStats:
    provider: str
    checks: int
    errors: int
    p95_latency_ms: int | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.checks if self.checks else 0.0


def provider_check_stats(*, since: datetime) -> list[ProviderCheckStats]:
    """Checks per provider since a moment: how many, how many failed, and the p95 latency.

    On PostgreSQL the percentile is computed by the database; elsewhere from at most the
    latest 5,000 latencies of each provider.
    """
    rows = (
        PaymentCheck.objects.filter(checked_at__gte=since)
        .values("attempt__provider")
        .annotate(n=Count("pk"), errors=Count("pk", filter=~Q(error_kind=PaymentCheck.ErrorKind.NONE)))
        .order_by("attempt__provider")
    )
    stats = []
    for row in rows:
        provider = row["attempt__provider"]
        stats.append(ProviderCheckStats(provider, row["n"], row["errors"], _p95_latency(provider, since)))
    return stats


def _p95_latency(provider: str, since: datetime) -> int | None:
    checks = PaymentCheck.objects.filter(checked_at__gte=since, attempt__provider=provider, latency_ms__isnull=False)
    if connection.vendor == "postgresql":
        sql, params = checks.values("latency_ms").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM ({sql}) AS c", params)
            value = cursor.fetchone()[0]
        return int(value) if value is not None else None
    latencies = sorted(checks.order_by("-checked_at").values_list("latency_ms", flat=True)[:5000])
    if not latencies:
        return None
    # Nearest rank, like PostgreSQL's percentile_disc.
    return int(latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)])
