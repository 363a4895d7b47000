from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from orders import ratelimit

DEFAULT_WRITE_RATE = "120/min"


class WriteRateThrottle(BaseThrottle):
    """Writes (POST, PUT, PATCH, DELETE) per user (a token is one user's), counted in fixed
    windows in the default cache (`orders.ratelimit`), so every web worker shares the count when
    the cache is Redis. Reads are not throttled. A fixed window keeps one integer per user
    whatever the rate (a client may burst up to twice the rate across a window's edge)."""

    scope = "api_write"

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        # Read at request time, so the setting can change without a restart.
        rate = getattr(settings, "API_WRITE_RATE", DEFAULT_WRITE_RATE)
        limit, window_seconds = SimpleRateThrottle.parse_rate(None, rate)
        user = request.user
        who = f"user:{user.pk}" if user and user.is_authenticated else f"ip:{ratelimit.client_ip(request)}"
        self.retry_after = ratelimit.take(
            [(f"throttle:{self.scope}:{who}", limit)], window_seconds=window_seconds, now=timezone.now()
        )
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
