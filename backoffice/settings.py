"""Settings for Order Recovery Desk.

Everything that differs between a laptop demo and a scaled deployment comes from the
environment: the same code runs on SQLite + the ORM broker and on PostgreSQL + Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off.")
    # Development only: a fixed, obviously unsafe key so sessions survive restarts.
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "backoffice.apps.BackofficeConfig",
    "backoffice.apps.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "support.apps.SupportConfig",
    "orders.apps.OrdersConfig",
]

MIDDLEWARE = [
    # First, so every log line of a request carries its id (docs/observability.md).
    "backoffice.monitoring.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backoffice.urls"
WSGI_APPLICATION = "backoffice.wsgi.application"
ASGI_APPLICATION = "backoffice.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# Default: an SQLite file under var/ in WAL mode. IMMEDIATE transactions take the write
# lock at BEGIN, so two writers queue on the busy timeout instead of failing with
# "database is locked" when a read transaction tries to upgrade.
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")))}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA busy_timeout=20000;"
                    "PRAGMA foreign_keys=ON;"
                ),
            },
        }
    }
DB_VENDOR = "postgresql" if DATABASES["default"]["ENGINE"].endswith("postgresql") else "sqlite"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Threads (each with its own connection) that journal and apply a re-check batch's answers.
# On PostgreSQL one thread's statements run while another's Python runs; SQLite has one
# writer at a time, so there the calling thread does it all.
# Task workers that sweep at once when more than one batch is due (PostgreSQL only: SKIP
# LOCKED hands them disjoint batches). Default: every worker of one cluster process.
SWEEP_WORKERS = int(os.environ.get("SWEEP_WORKERS", os.environ.get("Q_WORKERS", "2")))
RECHECK_DB_WRITERS = int(os.environ.get("RECHECK_DB_WRITERS", "3" if DB_VENDOR == "postgresql" else "1"))

# --- Cache ----------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # The database cache is shared by every web and cluster process, unlike locmem.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"}}

# Proxies in front of the web servers (nginx, a load balancer), each appending to
# X-Forwarded-For: the per-address limits (status page reports, anonymous API writes, bad
# webhook signatures) then count the client's address, not the proxy's. 0: no proxy.
TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES", "0"))

# --- REST API (/api/v1/) ----------------------------------------------------------------
# Writes per user (a token is one user's) in the default cache: Redis when REDIS_URL is set.
API_WRITE_RATE = os.environ.get("API_WRITE_RATE", "120/min")
# How long an API Idempotency-Key is remembered (and its response replayed).
IDEMPOTENCY_KEY_TTL_HOURS = int(os.environ.get("IDEMPOTENCY_KEY_TTL_HOURS", "24"))
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous request is answered 401 with WWW-Authenticate: Token.
        "orders.api.authentication.TokenAuthentication",
        # The browser (Swagger UI, staff pages); CSRF stays on for its writes.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["orders.api.parsers.LimitedJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "orders.api.pagination.OrderCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["orders.api.throttling.WriteRateThrottle"],
    "EXCEPTION_HANDLER": "orders.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Order Recovery Desk API",
    "DESCRIPTION": "Unreturned orders, their diagnosis and the actions that resolve them. "
                   "Every error has the shape {\"error\": {\"code\", \"message\", \"fields\"}}.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.states.OrderStatus",
        "AttemptStatusEnum": "orders.states.AttemptStatus",
        "CauseEnum": "orders.causes.Cause",
        "CategoryEnum": "orders.causes.Category",
        "TicketStatusEnum": "support.models.TicketStatus",
        "TicketCategoryEnum": "support.models.TICKET_CATEGORY_CHOICES",
        "TicketPriorityEnum": "support.models.TicketPriority",
        "TicketSourceEnum": "support.models.TicketSource",
        "MessageVisibilityEnum": "support.models.MessageVisibility",
    },
}

# --- Task cluster (django-q2) ---------------------------------------------------------
Q_BROKER = os.environ.get("Q_BROKER", "orm").lower()
if Q_BROKER not in {"orm", "redis"}:
    raise ImproperlyConfigured("Q_BROKER must be 'orm' or 'redis'.")
if Q_BROKER == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("Q_BROKER=redis needs REDIS_URL.")

Q_CLUSTER = {
    "name": "recovery-desk",
    # SQLite has one writer: one worker pair keeps lock waits short.
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 240,  # the longest task must finish before this...
    "retry": 300,  # ...and retry must be longer than timeout, or a task runs twice.
    "max_attempts": 3,
    "catch_up": False,
    # 0 keeps every success without trimming (a positive limit costs a locking query on every
    # save); the daily retention task deletes results older than RETENTION_TASK_RESULT_DAYS.
    "save_limit": 0,
    "ack_failures": True,
    "label": "Tasks",
}
if Q_BROKER == "redis":
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Payment providers ----------------------------------------------------------------
# Standard Webhooks secrets ("whsec_<base64>"). The fixed value is for DEBUG only, so that
# `make run` and `manage.py sandbox_provider` agree out of the box; production sets the env.
SANDBOX_WEBHOOK_SECRET = os.environ.get(
    "SANDBOX_WEBHOOK_SECRET",
    "whsec_b3JkZXItcmVjb3ZlcnktZGVzay9kZXYtb25seS9zYW5kYm94LWtleQ==" if DEBUG else "",
)
PAYMENT_PROVIDERS: dict[str, dict] = {}
if DEBUG or os.environ.get("SANDBOX_PROVIDER_URL"):
    PAYMENT_PROVIDERS["sandbox"] = {
        "adapter": "http",
        "base_url": os.environ.get("SANDBOX_PROVIDER_URL", "http://127.0.0.1:8100"),
        # Current secret first; during a rotation add the previous ones (comma-separated).
        "webhook_secrets": [SANDBOX_WEBHOOK_SECRET, *env_list("SANDBOX_WEBHOOK_SECRETS_PREVIOUS")],
        "connect_timeout": float(os.environ.get("SANDBOX_CONNECT_TIMEOUT", "2.0")),
        "read_timeout": float(os.environ.get("SANDBOX_READ_TIMEOUT", "5.0")),
    }

# --- Customer email and links ----------------------------------------------------------
# The demo prints emails on the console; production sets an SMTP backend and its settings.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Order Recovery Desk <support@localhost>")
# Absolute links in customer emails (the status page) start with this.
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# How long a customer's status-page link stays valid.
TRACK_LINK_MAX_AGE_DAYS = int(os.environ.get("TRACK_LINK_MAX_AGE_DAYS", "90"))

# --- Alerts (docs/monitoring.md) ------------------------------------------------------------
# Where the installed default alert rules send (editable per rule afterwards): emails (the
# support leads' when unset) and outbound webhook URLs; outbound webhooks are signed with the
# Standard Webhooks secret ("whsec_<base64>"), unsigned when it is unset.
ALERT_EMAILS = env_list("ALERT_EMAILS")
ALERT_WEBHOOK_URLS = env_list("ALERT_WEBHOOK_URLS")
ALERT_WEBHOOK_SECRET = os.environ.get("ALERT_WEBHOOK_SECRET", "")

# --- Auth, i18n, static ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Merchant users log in at /accounts/login/ (staff may too; the admin keeps its own login page).
# After logging in, the site root sends staff to the admin and everyone else to the portal.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "site-root"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = os.environ.get("LANGUAGE_CODE", "en")
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Lets a DEBUG-off server work straight from the source tree when collectstatic has not run.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", DEBUG)

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)

# --- Operations: logs, metrics, readiness, retention (docs/observability.md) ------------
# LOG_FORMAT=json writes one JSON object a line; plain is the default. Both carry the request
# id and, on engine lines, the order reference and provider; personal data is masked.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "backoffice.monitoring.logs.ContextFilter"},
        "mask": {"()": "backoffice.monitoring.logs.MaskingFilter"},
    },
    "formatters": {
        "plain": {"()": "backoffice.monitoring.logs.PlainFormatter"},
        "json": {"()": "backoffice.monitoring.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "mask"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; without a token it is off (403).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# /readyz: a schedule whose next run is this far in the past is late.
READYZ_SCHEDULE_GRACE_SECONDS = int(os.environ.get("READYZ_SCHEDULE_GRACE_SECONDS", "300"))
# Days after which raw callback bodies and check responses are pruned (the rows stay).
RETENTION_CALLBACK_DAYS = int(os.environ.get("RETENTION_CALLBACK_DAYS", "90"))
RETENTION_CHECK_DAYS = int(os.environ.get("RETENTION_CHECK_DAYS", "90"))
# Finished task results (django-q2's successes and failures): the system page's "last run".
RETENTION_TASK_RESULT_DAYS = int(os.environ.get("RETENTION_TASK_RESULT_DAYS", "7"))
if min(RETENTION_CALLBACK_DAYS, RETENTION_CHECK_DAYS, RETENTION_TASK_RESULT_DAYS) < 1:
    raise ImproperlyConfigured(
        "RETENTION_CALLBACK_DAYS, RETENTION_CHECK_DAYS and RETENTION_TASK_RESULT_DAYS must be at least 1."
    )
