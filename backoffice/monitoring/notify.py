"""Incident notifications: by email and by signed outbound webhook, with retries and a delivery log.

Each (incident event, channel, target) is one `IncidentNotification` row, written in the
transaction that opened or resolved the incident (`queue_incident_notifications`), so an
incident is never recorded without its notifications nor notified twice (the row is unique).
Rows are sent later by `send_due_incident_notifications`: every minute by the task cluster,
and right after each evaluation (so a watchdog evaluating while the cluster is down still
notifies).

Sending follows the customer outbox (`support.notifications`) and shares its retry policy:
claim due rows (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's IMMEDIATE
transaction serializes claimers), counting the attempt and taking a lease; re-check the claim
with a conditional UPDATE right before sending and when recording; retry after 1, 5, 15 and 60
minutes, then give up ("failed"). Concurrent senders therefore send each row once.

The webhook is a POST of plain JSON that chat tools accept as it is: `{"text": "…"}` plus the
incident's facts under `"incident"`. It carries Standard Webhooks headers (`webhook-id`, the
same on every retry of a row, `webhook-timestamp`, `webhook-signature`) signed with
`ALERT_WEBHOOK_SECRET` by the same code that verifies provider callbacks.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import httpx
from django.conf import settings
from django.core import mail
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from backoffice.monitoring.alert_signals import SIGNALS
from backoffice.monitoring.models import (
    Channel,
    DeliveryStatus,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentNotification,
)
from orders.providers import signing
# The customer outbox's retry policy and claim shape, shared rather than copied.
from support.notifications import SEND_LEASE, Claim, claim_due_rows, retry_delay, still_ours
from support.selectors import lead_emails

log = logging.getLogger(__name__)

Status = DeliveryStatus
WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
USER_AGENT = "OrderRecoveryDesk-Alerts/1"


# --- queueing -------------------------------------------------------------------------------


def targets_for(rule) -> list[tuple[str, str]]:
    """(channel, target) pairs a rule notifies, without repeats."""
    emails = list(rule.email_list)
    if rule.email_leads:
        emails += [email for email in lead_emails() if email not in emails]
    return [(Channel.EMAIL, email) for email in emails] + [(Channel.WEBHOOK, url) for url in rule.webhook_list]


def incident_url(incident: Incident) -> str:
    try:
        return settings.SITE_URL + reverse("admin:backoffice_incident_change", args=[incident.pk])
    except NoReverseMatch:  # the admin is not installed
        return ""


def _labels_text(labels: dict) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items()))


def render_message(incident: Incident, event: IncidentEvent) -> tuple[str, str, dict[str, Any]]:
    """(subject, body, webhook document) of an event, in the site's language."""
    rule = incident.rule
    url = incident_url(incident)
    labels = _labels_text(incident.labels)
    with translation.override(settings.LANGUAGE_CODE):
        what = {
            IncidentEventKind.OPENED: _("OPEN"),
            IncidentEventKind.RESOLVED: _("RESOLVED"),
            IncidentEventKind.ACKNOWLEDGED: _("ACKNOWLEDGED"),
        }[event.kind]
        subject = f"[{what}] [{incident.get_severity_display()}] {incident.summary}"
        condition = _("%(value)s %(comparison)s %(threshold)s") % {
            "value": _number(event.value if event.value is not None else incident.last_value),
            "comparison": rule.get_comparison_display(), "threshold": _number(incident.threshold),
        }
        lines = [
            _("Rule: %(rule)s") % {"rule": rule.name},
            _("Severity: %(severity)s") % {"severity": incident.get_severity_display()},
            *([_("Labels: %(labels)s") % {"labels": labels}] if labels else []),
            (_condition_line(rule, condition)
             if event.kind == IncidentEventKind.OPENED else
             _("Latest value: %(value)s (threshold %(threshold)s)") % {
                 "value": _number(event.value), "threshold": _number(incident.threshold)}),
            _("Opened: %(time)s") % {"time": _when(incident.opened_at)},
        ]
        if event.kind == IncidentEventKind.RESOLVED:
            lines.append(_("Resolved: %(time)s") % {"time": _when(event.at)})
        if event.message:
            lines += ["", event.message]
        if rule.description:
            lines += ["", rule.description]
        if url:
            lines += ["", url]
    body = "\n".join(lines) + "\n"
    subject = " ".join(subject.split())[:200]
    document = {
        "text": f"{subject}\n{url}" if url else subject,
        "incident": {
            "id": incident.pk,
            "event": event.kind,
            "status": incident.status,
            "severity": incident.severity,
            "rule": rule.name,
            "rule_key": rule.key or None,
            "signal": rule.signal,
            "labels": incident.labels,
            "value": event.value,
            "comparison": rule.comparison,
            "threshold": incident.threshold,
            "opened_at": incident.opened_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "url": url or None,
        },
    }
    return subject, body, document


def _condition_line(rule, condition: str) -> str:
    signal = SIGNALS.get(rule.signal)
    if signal is not None and not signal.uses_window:
        return _("Condition: %(condition)s") % {"condition": condition}
    return _("Condition: %(condition)s (window %(minutes)d min)") % {"condition": condition,
                                                                     "minutes": rule.window_minutes}


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if value < 10**6 else f"{value:.0f}"


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def queue_incident_notifications(*, incident: Incident, event: IncidentEvent, now: datetime | None = None) -> int:
    """Write the delivery rows of one event for every target of the incident's rule. Call it
    inside the transaction that records the event. Returns how many rows were written."""
    targets = targets_for(incident.rule)
    if not targets:
        log.warning("incident %s %s, but its rule %r has no channel to notify", incident.pk, event.kind,
                    incident.rule.name)
        return 0
    subject, body, document = render_message(incident, event)
    now = now or timezone.now()
    rows = [
        IncidentNotification(
            incident=incident, event=event, channel=channel, target=target[:500], subject=subject, body=body,
            payload=document, next_attempt_at=now, created_at=now,
        )
        for channel, target in targets
    ]
    # The event is new in this very transaction, so nobody else can have rows for it; the
    # unique (event, channel, target) still guards against repeats of a target.
    IncidentNotification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# --- sending --------------------------------------------------------------------------------


def claim_due_incident_notifications(*, now: datetime | None = None, limit: int = 50, lease=SEND_LEASE) -> list[Claim]:
    """Due deliveries for this sender, claimed as the customer outbox claims its rows."""
    return claim_due_rows(
        IncidentNotification, now=now, limit=limit, lease=lease,
        stopped_message="The sender stopped during the last attempt; it may not have been delivered.",
    )


def _still_ours(claim: Claim):
    return still_ours(IncidentNotification, claim)


class DeliveryFailed(Exception):
    pass


def _send_email(row: IncidentNotification, *, connection=None) -> None:
    mail.EmailMessage(
        subject=row.subject, body=row.body, from_email=settings.DEFAULT_FROM_EMAIL, to=[row.target],
        connection=connection,
        headers={"Auto-Submitted": "auto-generated", "X-Incident": str(row.incident_id),
                 "X-Incident-Notification": str(row.pk)},
    ).send(fail_silently=False)


def webhook_request(row: IncidentNotification, *, timestamp: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a row's webhook delivery. `webhook-id` stays the same on every
    retry of the row, so a receiver can drop repeats."""
    body = json.dumps(row.payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    msg_id = f"incident-notification-{row.pk}"
    secret = settings.ALERT_WEBHOOK_SECRET
    if secret:
        headers.update(signing.sign_headers(secret, msg_id, body, timestamp=timestamp))
    else:
        headers.update({signing.HEADER_ID: msg_id, signing.HEADER_TIMESTAMP: str(int(timestamp or time.time()))})
    return body, headers


def _send_webhook(row: IncidentNotification, *, client: httpx.Client) -> None:
    body, headers = webhook_request(row)
    try:
        response = client.post(row.target, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:300]}")


def send_claimed(claim: Claim, *, now: datetime | None = None, connection=None,
                 client: httpx.Client | None = None) -> str:
    """Deliver one claimed row: "sent", "failed" (retried later or given up) or "lost" (no
    longer ours: taken over after our lease ran out, or already sent)."""
    current = now or timezone.now()
    if not _still_ours(claim).update(next_attempt_at=current + SEND_LEASE):
        return "lost"
    row = IncidentNotification.objects.get(pk=claim.pk)
    try:
        if row.channel == Channel.EMAIL:
            _send_email(row, connection=connection)
        else:
            if client is None:
                with httpx.Client(timeout=WEBHOOK_TIMEOUT, follow_redirects=False) as own:
                    _send_webhook(row, client=own)
            else:
                _send_webhook(row, client=client)
    except Exception as exc:  # noqa: BLE001 - every failure of a channel is retried
        error = str(exc) if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"
        delay = retry_delay(claim.attempt)
        if delay is None:
            _still_ours(claim).update(status=Status.FAILED, next_attempt_at=None, last_error=error[:2000])
        else:
            _still_ours(claim).update(status=Status.PENDING, next_attempt_at=current + delay, last_error=error[:2000])
        log.warning("incident notification %s (%s to %s, try %s) failed: %s", row.pk, row.channel, row.target,
                    claim.attempt, error)
        return "failed"
    done = _still_ours(claim).update(status=Status.SENT, sent_at=now or timezone.now(), next_attempt_at=None,
                                     last_error="")
    return "sent" if done else "lost"


def send_due_incident_notifications(*, now: datetime | None = None, batch_size: int = 50, time_budget: float = 40.0,
                                    client: httpx.Client | None = None) -> int:
    """Send due rows batch after batch until none is due or the time budget is spent. Returns how
    many were sent. Safe to run concurrently and again."""
    started = time.monotonic()
    sent = 0
    own_client = client is None
    client = client or httpx.Client(timeout=WEBHOOK_TIMEOUT, follow_redirects=False)
    try:
        while time.monotonic() - started < time_budget:
            claims = claim_due_incident_notifications(now=now, limit=batch_size)
            if not claims:
                break
            connection = mail.get_connection()
            connection.open()  # one SMTP session for the batch, not one per email
            try:
                for claim in claims:
                    sent += send_claimed(claim, now=now, connection=connection, client=client) == "sent"
            finally:
                connection.close()
    finally:
        if own_client:
            client.close()
    return sent


def retry_incident_notifications(*, notification_ids: list[int], now: datetime | None = None) -> int:
    """"Retry now": failed or waiting rows become due at once; rows being sent or sent are left
    alone. A failed row gets one more try (its attempts keep counting)."""
    return IncidentNotification.objects.filter(
        pk__in=notification_ids, status__in=[Status.FAILED, Status.PENDING]
    ).update(status=Status.PENDING, next_attempt_at=now or timezone.now())
