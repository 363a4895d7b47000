"""Counts of the unreturned backlog, taken by the sweep and kept for trends and metrics."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from orders.models import Order, PaymentAttempt, UnreturnedSnapshot

# Age buckets of an unreturned order, by how long it has been flagged: code -> (from, to).
AGE_BUCKETS: dict[str, tuple[timedelta, timedelta | None]] = {
    "lt15m": (timedelta(0), timedelta(minutes=15)),
    "15m-1h": (timedelta(minutes=15), timedelta(hours=1)),
    "1h-6h": (timedelta(hours=1), timedelta(hours=6)),
    "6h-24h": (timedelta(hours=6), timedelta(hours=24)),
    "gt24h": (timedelta(hours=24), None),
}
# How often the sweep stores a snapshot, and how long snapshots are kept.
SNAPSHOT_EVERY = timedelta(minutes=5)
SNAPSHOT_KEEP = timedelta(days=35)


def age_bucket_q(code: str, *, now: datetime) -> Q:
    """The filter for orders flagged for an age within the bucket `code`."""
    low, high = AGE_BUCKETS[code]
    q = Q(stuck_since__lte=now - low)
    if high is not None:
        q &= Q(stuck_since__gt=now - high)
    return q


def unreturned_counts(*, now: datetime | None = None, orders: QuerySet[Order] | None = None) -> dict:
    """The backlog right now, in three aggregate queries over the flagged orders only; among
    `orders` when given (a user's scoped orders, for the API's summary)."""
    now = now or timezone.now()
    scoped = orders is not None
    flagged = (orders if scoped else Order.objects.all()).filter(stuck_since__isnull=False)
    totals = flagged.aggregate(
        total=Count("pk"),
        needs_review=Count("pk", filter=Q(needs_review=True)),
        **{f"age_{code}": Count("pk", filter=age_bucket_q(code, now=now)) for code in AGE_BUCKETS},
    )
    by_cause: dict[str, int] = {}
    by_category: dict[str, int] = {}
    for cause, category, count in flagged.order_by().values_list("stuck_cause", "stuck_category").annotate(n=Count("pk")):
        by_cause[cause] = by_cause.get(cause, 0) + count
        by_category[category] = by_category.get(category, 0) + count
    attempts = (PaymentAttempt.objects.filter(order__in=flagged.order_by().values("pk")) if scoped
                else PaymentAttempt.objects.filter(order__stuck_since__isnull=False))
    by_provider = dict(
        attempts
        .order_by()
        .values_list("provider")
        .annotate(n=Count("order_id", distinct=True))
    )
    return {
        "total": totals["total"],
        "needs_review": totals["needs_review"],
        "by_cause": by_cause,
        "by_category": by_category,
        "by_provider": by_provider,
        "by_age": {code: totals[f"age_{code}"] for code in AGE_BUCKETS},
    }


def take_snapshot_if_due(*, now: datetime | None = None) -> UnreturnedSnapshot | None:
    now = now or timezone.now()
    last = UnreturnedSnapshot.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
    if last is not None and now - last < SNAPSHOT_EVERY:
        return None
    counts = unreturned_counts(now=now)
    snapshot = UnreturnedSnapshot.objects.create(taken_at=now, **counts)
    UnreturnedSnapshot.objects.filter(taken_at__lt=now - SNAPSHOT_KEEP).delete()
    return snapshot
