"""Providers come from settings.PAYMENT_PROVIDERS, are built once per process, and a bad
configuration fails loudly instead of silently refusing every callback."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from orders.providers import registry
from orders.providers.base import PaymentProvider
from orders.providers.http import HttpProvider

from .conftest import OLD_SECRET, SECRET


def sandbox_config(**overrides: object) -> dict[str, object]:
    return {
        "adapter": "http",
        "base_url": "http://127.0.0.1:8100",
        "webhook_secrets": [SECRET, OLD_SECRET, ""],
        "connect_timeout": 1.5,
        "read_timeout": 4.0,
    } | overrides


@pytest.fixture(autouse=True)
def fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_builds_the_http_adapter_from_settings(settings) -> None:
    settings.PAYMENT_PROVIDERS = {"sandbox": sandbox_config()}
    provider = registry.get_provider("sandbox")
    assert isinstance(provider, HttpProvider)
    assert isinstance(provider, PaymentProvider)
    assert provider.name == "sandbox"
    assert provider.base_url == "http://127.0.0.1:8100"
    # The empty entry (an unset "previous secret" variable) is dropped.
    assert provider.webhook_secrets == (SECRET, OLD_SECRET)
    assert provider.client.timeout.connect == 1.5
    assert provider.client.timeout.read == 4.0
    assert registry.provider_names() == ["sandbox"]
    assert registry.is_configured("sandbox") and not registry.is_configured("other")


def test_one_instance_per_process_until_settings_change(settings) -> None:
    settings.PAYMENT_PROVIDERS = {"sandbox": sandbox_config()}
    first = registry.get_provider("sandbox")
    assert registry.get_provider("sandbox") is first
    settings.PAYMENT_PROVIDERS = {"sandbox": sandbox_config(base_url="http://127.0.0.1:9999")}
    second = registry.get_provider("sandbox")
    assert second is not first
    assert second.base_url == "http://127.0.0.1:9999"
    assert first.client.is_closed


def test_unknown_provider(settings) -> None:
    settings.PAYMENT_PROVIDERS = {"sandbox": sandbox_config()}
    with pytest.raises(registry.UnknownProvider):
        registry.get_provider("nosuch")


def test_single_secret_string_is_accepted(settings) -> None:
    settings.PAYMENT_PROVIDERS = {"sandbox": sandbox_config(webhook_secrets=SECRET)}
    assert registry.get_provider("sandbox").webhook_secrets == (SECRET,)


def test_dotted_adapter_path(settings) -> None:
    settings.PAYMENT_PROVIDERS = {"psp": sandbox_config(adapter="orders.providers.http.HttpProvider")}
    assert isinstance(registry.get_provider("psp"), HttpProvider)


@pytest.mark.parametrize(
    "config",
    [
        sandbox_config(webhook_secrets=[]),
        sandbox_config(webhook_secrets=[None, ""]),
        sandbox_config(webhook_secrets=["not-a-whsec-secret"]),
        sandbox_config(base_url=""),
        sandbox_config(read_timout=3),
        sandbox_config(adapter="nosuch.Adapter"),
        "http://127.0.0.1:8100",
    ],
)
def test_bad_configuration_is_loud(settings, config: object) -> None:
    settings.PAYMENT_PROVIDERS = {"sandbox": config}
    with pytest.raises(ImproperlyConfigured) as caught:
        registry.get_provider("sandbox")
    # A secret never ends up in an error message (they reach logs and pages).
    assert "not-a-whsec-secret" not in str(caught.value)
