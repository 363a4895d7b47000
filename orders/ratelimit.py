"""Fixed-window rate limits counted in the default cache (Redis when `REDIS_URL` is set, so
every web process shares the counts).

A window is named by the application's clock (`<key>:<window number>`), not by the cache's
expiry: the count is the same on every cache backend, Redis expiring keys by its own clock.
One small integer per key and window, whatever the rate, where a sliding log would keep a
timestamp per request.
"""

from __future__ import annotations

from datetime import datetime

from django.core.cache import cache
from django.utils import timezone


def take(limits: list[tuple[str, int]], *, window_seconds: int, now: datetime | None = None) -> float | None:
    """Count one hit against each `(key, limit)` in the current window.

    Returns None when every limit allows it (and the hit is counted), or the seconds until the
    window ends when one is already reached (and nothing is counted)."""
    at = (now or timezone.now()).timestamp()
    window = int(at // window_seconds)
    keys = [(f"{key}:{window}", limit) for key, limit in limits]
    counts = cache.get_many([key for key, _limit in keys])
    if any(counts.get(key, 0) >= limit for key, limit in keys):
        return (window + 1) * window_seconds - at
    for key, _limit in keys:
        if key not in counts:
            # add() starts the window; a concurrent add() loses and the incr() below counts.
            cache.add(key, 0, window_seconds)
        try:
            cache.incr(key)  # atomic on Redis and locmem
        except ValueError:  # expired between add() and incr()
            cache.set(key, 1, window_seconds)
    return None
