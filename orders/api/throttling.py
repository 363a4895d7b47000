from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import UserRateThrottle

DEFAULT_WRITE_RATE = "120/min"


class WriteRateThrottle(UserRateThrottle):
    """Writes (POST, PUT, PATCH, DELETE) per user (a token is one user's), counted in the default
    cache, so every web worker shares the count when the cache is Redis. Reads are not throttled."""

    scope = "api_write"

    def get_rate(self) -> str:
        # Read at request time, so the setting can change without a restart of the class.
        return getattr(settings, "API_WRITE_RATE", DEFAULT_WRITE_RATE)

    def allow_request(self, request, view) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
