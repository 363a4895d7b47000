"""System checks of the back-office's settings: run by `manage.py check`, `migrate` and
`runserver` (and so by `make run`), so a bad value is found at deployment, not when an alert
needs to go out."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register


@register()
def alert_webhook_secret(app_configs, **kwargs) -> list[Error]:
    from orders.providers.signing import decode_secret

    secret = getattr(settings, "ALERT_WEBHOOK_SECRET", "")
    if not secret:
        return []  # unsigned webhooks (docs/monitoring.md)
    try:
        decode_secret(secret)
    except ValueError as exc:
        return [Error(
            f"ALERT_WEBHOOK_SECRET is not usable: {exc}.",
            hint="Generate one with: python -c \"from orders.providers.signing import generate_secret; "
                 "print(generate_secret())\"",
            id="backoffice.E001",
        )]
    return []
