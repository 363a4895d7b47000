"""Monitoring records. Imported by `backoffice.models`, so they belong to the backoffice app."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class Heartbeat(models.Model):
    """The last sign of life of a process group, written by a scheduled task. The task cluster
    beats every minute (`backoffice.monitoring.tasks.cluster_heartbeat`); readiness, the system
    page and the "task cluster down" alert read its age."""

    name = models.CharField(_("name"), max_length=64, unique=True)
    beat_at = models.DateTimeField(_("last beat"), default=timezone.now)
    host = models.CharField(_("host"), max_length=255, blank=True)
    pid = models.PositiveIntegerField(_("process id"), null=True, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("heartbeat")
        verbose_name_plural = _("heartbeats")

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


# --- alert rules and incidents (docs/monitoring.md) -------------------------------------------


def alert_signal_choices() -> list[tuple[str, str]]:
    """The registered alert signals, for the rule's `signal` field (imported late: the registry
    reads models of other apps)."""
    from backoffice.monitoring.alert_signals import SIGNALS

    return [(name, signal.label) for name, signal in SIGNALS.items()]


class Comparison(models.TextChoices):
    GT = "gt", ">"
    GTE = "gte", "≥"
    LT = "lt", "<"
    LTE = "lte", "≤"


class Severity(models.TextChoices):
    INFO = "info", _("info")
    WARNING = "warning", _("warning")
    CRITICAL = "critical", _("critical")


class AlertRule(models.Model):
    """A condition on one signal that opens an incident per label set while it holds.

    Rules with a `key` are the installed defaults (`alerts.install_default_rules`): created once,
    never overwritten afterwards, so staff edits stand."""

    Comparison = Comparison
    Severity = Severity

    name = models.CharField(_("name"), max_length=120)
    key = models.SlugField(
        _("key"), max_length=64, blank=True,
        help_text=_("Set on the installed default rules, which are never overwritten once installed."),
    )
    description = models.TextField(_("description"), blank=True, help_text=_("What it means and what to do."))
    signal = models.CharField(_("signal"), max_length=64, choices=alert_signal_choices)
    labels = models.JSONField(
        _("label filter"), default=dict, blank=True,
        help_text=_('Exact label matches, e.g. {"provider": "sandbox"}; empty matches every label set.'),
    )
    comparison = models.CharField(_("comparison"), max_length=4, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField(_("threshold"))
    window_minutes = models.PositiveIntegerField(
        _("window (minutes)"), default=10, help_text=_("How far back the signal looks (ignored by point-in-time signals).")
    )
    severity = models.CharField(_("severity"), max_length=8, choices=Severity.choices, default=Severity.WARNING)
    email_recipients = models.TextField(
        _("email recipients"), blank=True, help_text=_("Email addresses, one per line or comma-separated.")
    )
    email_leads = models.BooleanField(
        _("email the support leads"), default=False,
        help_text=_("Also email every active member of the support lead group (their addresses when it fires)."),
    )
    webhook_urls = models.TextField(
        _("webhook URLs"), blank=True,
        help_text=_("Outbound webhooks (plain JSON, signed with Standard Webhooks headers), one per line."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("alert rule")
        verbose_name_plural = _("alert rules")
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=~models.Q(key=""), name="alert_rule_unique_key"),
            models.CheckConstraint(condition=models.Q(window_minutes__gte=1), name="alert_rule_window_positive"),
            models.CheckConstraint(condition=models.Q(comparison__in=Comparison.values), name="alert_rule_comparison_valid"),
            models.CheckConstraint(condition=models.Q(severity__in=Severity.values), name="alert_rule_severity_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def email_list(self) -> list[str]:
        return split_list(self.email_recipients)

    @property
    def webhook_list(self) -> list[str]:
        return split_list(self.webhook_urls)


def split_list(text: str) -> list[str]:
    """Entries of a channel field (commas or line breaks), in order, without repeats."""
    seen: list[str] = []
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if part and part not in seen:
            seen.append(part)
    return seen


class IncidentStatus(models.TextChoices):
    OPEN = "open", pgettext_lazy("incident status", "open")
    RESOLVED = "resolved", pgettext_lazy("incident status", "resolved")


class Incident(models.Model):
    """One firing of a rule for one label set, from the evaluation that found the condition
    true to the one that found it clear. At most one is open per rule and label set."""

    Status = IncidentStatus

    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="incidents", verbose_name=_("rule"))
    labels = models.JSONField(_("labels"), default=dict, blank=True)
    # The labels as one canonical string (sorted `name=value` pairs): the unique key of an open incident.
    label_key = models.CharField(_("label key"), max_length=255, blank=True)
    status = models.CharField(_("status"), max_length=8, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    # Copied from the rule when it opened: editing the rule later does not rewrite history.
    severity = models.CharField(_("severity"), max_length=8, choices=Severity.choices)
    summary = models.CharField(_("summary"), max_length=300)
    threshold = models.FloatField(_("threshold"))
    opened_at = models.DateTimeField(_("opened"), default=timezone.now)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    last_value = models.FloatField(_("last value"), null=True, blank=True)
    last_evaluated_at = models.DateTimeField(_("last evaluated"), null=True, blank=True)
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("acknowledged by"),
    )

    class Meta:
        verbose_name = _("incident")
        verbose_name_plural = _("incidents")
        ordering = ["-opened_at", "-id"]
        permissions = [("acknowledge_incident", _("Can acknowledge incidents"))]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "label_key"], condition=models.Q(status=IncidentStatus.OPEN),
                name="incident_one_open_per_rule_labels",
            ),
            models.CheckConstraint(condition=models.Q(status__in=IncidentStatus.values), name="incident_status_valid"),
            models.CheckConstraint(
                condition=(models.Q(status=IncidentStatus.OPEN, resolved_at__isnull=True)
                           | models.Q(status=IncidentStatus.RESOLVED, resolved_at__isnull=False)),
                name="incident_resolved_at_iff_resolved",
            ),
        ]
        indexes = [models.Index(fields=["status", "-opened_at"], name="incident_status_recent_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.summary}"

    @property
    def is_open(self) -> bool:
        return self.status == IncidentStatus.OPEN


class IncidentEventKind(models.TextChoices):
    OPENED = "opened", pgettext_lazy("incident event", "opened")
    ACKNOWLEDGED = "acknowledged", pgettext_lazy("incident event", "acknowledged")
    RESOLVED = "resolved", pgettext_lazy("incident event", "resolved")


class IncidentEvent(models.Model):
    """Every change of an incident, append-only: opened, acknowledged, resolved."""

    Kind = IncidentEventKind

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events", verbose_name=_("incident"))
    kind = models.CharField(_("kind"), max_length=16, choices=IncidentEventKind.choices)
    at = models.DateTimeField(_("at"), default=timezone.now)
    value = models.FloatField(_("value"), null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("by"),
    )
    message = models.TextField(_("message"), blank=True)

    class Meta:
        verbose_name = _("incident event")
        verbose_name_plural = _("incident events")
        ordering = ["at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=IncidentEventKind.values), name="incident_event_kind_valid"),
        ]
        indexes = [models.Index(fields=["incident", "at"], name="incident_event_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} @ {self.at:%Y-%m-%d %H:%M:%S}"


class Channel(models.TextChoices):
    EMAIL = "email", _("email")
    WEBHOOK = "webhook", _("webhook")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", pgettext_lazy("delivery status", "pending")
    SENDING = "sending", pgettext_lazy("delivery status", "sending")
    SENT = "sent", pgettext_lazy("delivery status", "sent")
    FAILED = "failed", pgettext_lazy("delivery status", "failed")


class IncidentNotification(models.Model):
    """One message about one incident event to one target of one channel: the delivery log.
    Written with the event, in its transaction; sent later, with retries
    (`backoffice.monitoring.notify`)."""

    Channel = Channel
    Status = DeliveryStatus

    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="notifications", verbose_name=_("incident")
    )
    event = models.ForeignKey(
        IncidentEvent, on_delete=models.CASCADE, related_name="notifications", verbose_name=_("event")
    )
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    target = models.CharField(_("target"), max_length=500, help_text=_("Email address or webhook URL."))
    subject = models.CharField(_("subject"), max_length=200)
    body = models.TextField(_("body"))
    # The webhook's JSON document (for email, the same facts).
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True, default=timezone.now)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("incident notification")
        verbose_name_plural = _("incident notifications")
        ordering = ["-created_at", "-id"]
        permissions = [("retry_incidentnotification", _("Can retry incident notifications"))]
        constraints = [
            models.UniqueConstraint(fields=["event", "channel", "target"], name="incident_notification_once"),
            models.CheckConstraint(condition=models.Q(channel__in=Channel.values), name="incident_notification_channel_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=DeliveryStatus.values), name="incident_notification_status_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="incident_notification_due_idx",
                condition=models.Q(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
            ),
            models.Index(fields=["incident", "created_at"], name="incident_notification_inc_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} → {self.target}"
