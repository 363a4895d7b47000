"""Test settings: the environment still picks the database and the broker, so the same
suite runs on SQLite, on PostgreSQL and with Redis."""

import os

os.environ.setdefault("DEBUG", "1")

from backoffice.settings import *  # noqa: E402,F403
from backoffice.settings import Q_CLUSTER  # noqa: E402

# django-q2 reads its configuration once at import: tasks run inline in tests.
Q_CLUSTER["sync"] = True

# Test cases run inside a transaction that other connections cannot see: apply re-check
# answers on the test's own connection (the threaded path has its own PostgreSQL test).
RECHECK_DB_WRITERS = 1

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": f"test-{os.getpid()}",
        }
    }
LANGUAGE_CODE = "en"
# Tests never collect static files; whitenoise serves them from the apps (finders).
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
