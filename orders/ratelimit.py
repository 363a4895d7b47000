"""Fixed-window rate limits counted in the default cache (Redis when `REDIS_URL` is set, so
every web process shares the counts).

A window is named by the application's clock (`<key>:<window number>`), not by the cache's
expiry: the count is the same on every cache backend, Redis expiring keys by its own clock.
One small integer per key and window, whatever the rate, where a sliding log would keep a
timestamp per request.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone

# On Redis, one round trip: refuse when any limit is reached, otherwise count the hit against
# every key, starting a key's expiry with its window. KEYS are the window keys, ARGV their
# limits and then the expiry in seconds. Returns 1 when counted, 0 when refused.
_REDIS_TAKE = """
for i, key in ipairs(KEYS) do
    if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then
        return 0
    end
end
for i, key in ipairs(KEYS) do
    if redis.call('INCR', key) == 1 then
        redis.call('EXPIRE', key, ARGV[#KEYS + 1])
    end
end
return 1
"""
_redis_script = None  # the registered script (its SHA); any client of the cache runs it


def take(limits: list[tuple[str, int]], *, window_seconds: int, now: datetime | None = None) -> float | None:
    """Count one hit against each `(key, limit)` in the current window.

    Returns None when every limit allows it (and the hit is counted), or the seconds until the
    window ends when one is already reached (and nothing is counted)."""
    at = (now or timezone.now()).timestamp()
    window = int(at // window_seconds)
    keys = [(f"{key}:{window}", limit) for key, limit in limits]
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, RedisCache):
        counted = _take_on_redis(backend, keys, window_seconds)
        return None if counted else (window + 1) * window_seconds - at
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


def _take_on_redis(backend: RedisCache, keys: list[tuple[str, int]], window_seconds: int) -> bool:
    """`take` in one Redis call (a script runs atomically), where the generic path needs a read
    and then a write per key. The counts are plain integers, which the cache reads back as they
    are."""
    global _redis_script
    # One client per cache backend (Django makes one per thread), where `get_client()` builds a
    # new one on every call.
    client = getattr(backend, "_ratelimit_client", None)
    if client is None:
        client = backend._ratelimit_client = backend._cache.get_client(write=True)
    if _redis_script is None:
        _redis_script = client.register_script(_REDIS_TAKE)
    full_keys = [backend.make_and_validate_key(key) for key, _limit in keys]
    return bool(_redis_script(keys=full_keys, args=[*(limit for _key, limit in keys), window_seconds], client=client))


def client_ip(request) -> str:
    """The address a request came from, for limits per address.

    `REMOTE_ADDR`, unless the site runs behind `TRUSTED_PROXIES` proxies (nginx, a load balancer),
    each of which appends the address it received the request from to `X-Forwarded-For`: then
    the client is that many entries from the right. Entries further left were sent by the client
    and prove nothing, so they are never used."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    proxies = getattr(settings, "TRUSTED_PROXIES", 0)
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    return forwarded[-min(proxies, len(forwarded))]
