"""Shared by the alert, incident, notification and system page tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from backoffice.monitoring.alerts import evaluate_rules
from backoffice.monitoring.models import AlertRule, Incident, IncidentNotification


def rule(key: str, **changes) -> AlertRule:
    """An installed default rule (installed after migrate), with `changes` saved."""
    found = AlertRule.objects.get(key=key)
    for name, value in changes.items():
        setattr(found, name, value)
    if changes:
        found.save()
    return found


def custom_rule(**fields) -> AlertRule:
    fields.setdefault("name", "Backlog above 5")
    fields.setdefault("signal", "unreturned_backlog")
    fields.setdefault("comparison", AlertRule.Comparison.GT)
    fields.setdefault("threshold", 5)
    fields.setdefault("window_minutes", 10)
    fields.setdefault("email_recipients", "oncall@example.com")
    return AlertRule.objects.create(**fields)


def evaluate(*rules: AlertRule, now: datetime | None = None):
    """Evaluate only these rules (the other defaults would fire too in an empty test database:
    no cluster heartbeat)."""
    return evaluate_rules(now=now or timezone.now(), rules=AlertRule.objects.filter(pk__in=[r.pk for r in rules]))


def incidents_of(alert_rule: AlertRule) -> list[Incident]:
    return list(Incident.objects.filter(rule=alert_rule).order_by("opened_at", "id"))


def notifications_of(alert_rule: AlertRule) -> list[IncidentNotification]:
    return list(IncidentNotification.objects.filter(incident__rule=alert_rule).select_related("event")
                .order_by("created_at", "id"))


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
