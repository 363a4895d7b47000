"""The operations dashboard on the admin home page."""

from __future__ import annotations

from django.core.cache import cache
from django.utils import timezone

from orders.snapshots import unreturned_counts

CACHE_SECONDS = 30


def dashboard_context(request) -> dict:
    if not request.user.has_perm("orders.view_order"):
        return {}
    counts = cache.get("dashboard:counts")
    if counts is None:
        counts = unreturned_counts(now=timezone.now())
        cache.set("dashboard:counts", counts, CACHE_SECONDS)
    return {"unreturned": counts}
