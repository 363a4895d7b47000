"""Which payment providers exist, built from `settings.PAYMENT_PROVIDERS`.

    PAYMENT_PROVIDERS = {
        "sandbox": {
            "adapter": "http",                      # or a dotted path to an adapter class
            "base_url": "http://127.0.0.1:8100",
            "webhook_secrets": ["whsec_...", ...],  # current first; older ones during rotation
            "connect_timeout": 2.0,
            "read_timeout": 5.0,
            "query_retries": 1,                     # optional
        },
    }

Secrets come from the environment through settings; this module never reads os.environ.
Adapters are built once per process and cached, so their HTTP connection pools are reused;
the cache is dropped when tests override the setting.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from orders.providers.base import PaymentProvider

ADAPTERS: dict[str, str] = {
    "http": "orders.providers.http.HttpProvider",
}

# Keys each adapter accepts besides "adapter"; anything else is a typo we want to hear about.
_HTTP_KEYS = {"base_url", "webhook_secrets", "connect_timeout", "read_timeout", "query_retries"}

_lock = threading.Lock()
_cache: dict[str, PaymentProvider] = {}


class UnknownProvider(LookupError):
    """No provider of that name is configured (for example a webhook URL with a typo)."""


def provider_names() -> list[str]:
    return sorted(_configured())


def is_configured(name: str) -> bool:
    return name in _configured()


def get_provider(name: str) -> PaymentProvider:
    """The adapter for `name`, built on first use and then shared by the whole process."""
    provider = _cache.get(name)
    if provider is not None:
        return provider
    with _lock:
        # Another thread may have built it while we waited for the lock.
        provider = _cache.get(name)
        if provider is None:
            provider = _build(name)
            _cache[name] = provider
    return provider


def clear_cache() -> None:
    """Forget built adapters and close their connections (tests, settings changes)."""
    with _lock:
        providers = list(_cache.values())
        _cache.clear()
    for provider in providers:
        close = getattr(provider, "close", None)
        if callable(close):
            close()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "PAYMENT_PROVIDERS":
        clear_cache()


def _configured() -> Mapping[str, Mapping[str, Any]]:
    providers = getattr(settings, "PAYMENT_PROVIDERS", {}) or {}
    if not isinstance(providers, Mapping):
        raise ImproperlyConfigured(_("PAYMENT_PROVIDERS must be a dict of provider name to options."))
    return providers


def _build(name: str) -> PaymentProvider:
    config = _configured().get(name)
    if config is None:
        raise UnknownProvider(_("No payment provider named “%(name)s” is configured.") % {"name": name})
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(_("PAYMENT_PROVIDERS[“%(name)s”] must be a dict.") % {"name": name})
    options = dict(config)
    adapter = options.pop("adapter", "http")
    path = ADAPTERS.get(adapter, adapter)
    try:
        adapter_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            _("Payment provider “%(name)s” names an unknown adapter “%(adapter)s”.")
            % {"name": name, "adapter": adapter}
        ) from exc

    if path == ADAPTERS["http"]:
        unknown = sorted(set(options) - _HTTP_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                _("Payment provider “%(name)s” has unknown options: %(options)s.")
                % {"name": name, "options": ", ".join(unknown)}
            )
        if not options.get("base_url"):
            raise ImproperlyConfigured(_("Payment provider “%(name)s” needs a base_url.") % {"name": name})
        secrets = options.get("webhook_secrets", [])
        if isinstance(secrets, str):
            # A single string would otherwise be read as a list of one-character secrets.
            secrets = [secrets]
        options["webhook_secrets"] = [secret for secret in secrets if secret]
        if not options["webhook_secrets"]:
            # Refused rather than built: every callback would be rejected without a word,
            # and the cause is almost always a missing environment variable.
            raise ImproperlyConfigured(
                _("Payment provider “%(name)s” has no webhook secret; set it in the environment.") % {"name": name}
            )
    try:
        provider = adapter_class(name=name, **options)
    except ValueError as exc:
        # Bad secrets and similar: name the provider, never echo the secret itself.
        raise ImproperlyConfigured(
            _("Payment provider “%(name)s” is misconfigured: %(error)s") % {"name": name, "error": exc}
        ) from exc
    if not isinstance(provider, PaymentProvider):
        raise ImproperlyConfigured(
            _("The adapter of payment provider “%(name)s” is not a PaymentProvider.") % {"name": name}
        )
    return provider
