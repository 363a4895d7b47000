from __future__ import annotations

from backoffice.checks import alert_webhook_secret


def test_a_malformed_alert_webhook_secret_is_a_system_check_error(settings):
    settings.ALERT_WEBHOOK_SECRET = "not-a-secret"

    (error,) = alert_webhook_secret(None)

    assert error.id == "backoffice.E001"
    assert "whsec_" in error.msg


def test_no_alert_webhook_secret_or_a_good_one_passes(settings):
    settings.ALERT_WEBHOOK_SECRET = ""
    assert alert_webhook_secret(None) == []

    settings.ALERT_WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    assert alert_webhook_secret(None) == []
