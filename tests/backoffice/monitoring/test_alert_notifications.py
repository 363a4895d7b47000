"""Incident notifications: email and signed webhook, retried after 1, 5, 15 and 60 minutes, sent
once even with concurrent senders."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from backoffice.monitoring.alerts import resolve_incident
from backoffice.monitoring.models import IncidentNotification
from backoffice.monitoring.notify import (
    claim_due_incident_notifications,
    retry_incident_notifications,
    send_due_incident_notifications,
    targets_for,
    webhook_request,
)
from backoffice.monitoring.tasks import send_incident_notifications
from orders.models import UnreturnedSnapshot
from orders.providers.signing import generate_secret
from tests.backoffice.factories import LEAD, staff_in
from tests.backoffice.monitoring.alert_helpers import custom_rule, evaluate, minutes
from tests.orders.engine_helpers import run_in_threads

pytestmark = pytest.mark.django_db

HOOK = "https://chat.example.com/hooks/ops"


class Receiver:
    """A webhook receiver behind httpx.MockTransport: answers from a script, records requests."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            status = self.answers.pop(0) if self.answers else 200
        if status == 0:
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(status, text="ok" if status < 300 else "nope")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


@pytest.fixture
def secret(settings) -> str:
    settings.ALERT_WEBHOOK_SECRET = generate_secret()
    return settings.ALERT_WEBHOOK_SECRET


@pytest.fixture
def incident():
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    alert_rule = custom_rule(name="Backlog", email_recipients="oncall@example.com", webhook_urls=HOOK,
                             severity="critical", description="Look at the dashboard.")
    evaluate(alert_rule)
    return alert_rule.incidents.get()


def rows(**filters):
    return list(IncidentNotification.objects.filter(**filters).order_by("pk"))


def test_an_opened_incident_is_emailed_and_posted_as_signed_json(incident, secret):
    receiver = Receiver(200)

    assert send_due_incident_notifications(client=receiver.client()) == 2

    [email] = mail.outbox
    assert email.to == ["oncall@example.com"]
    assert email.subject == "[OPEN] [critical] Backlog"
    assert "Condition: 10 > 5\n" in email.body and "Look at the dashboard." in email.body
    assert f"/admin/backoffice/incident/{incident.pk}/change/" in email.body
    [request] = receiver.requests
    assert request.url == HOOK and request.headers["content-type"] == "application/json"
    # A receiver verifies it with any Standard Webhooks library.
    Webhook(secret).verify(request.content.decode(), dict(request.headers))
    document = json.loads(request.content)
    assert document["text"].startswith("[OPEN] [critical] Backlog")
    assert document["incident"] | {"opened_at": None} == {
        "id": incident.pk, "event": "opened", "status": "open", "severity": "critical", "rule": "Backlog",
        "rule_key": None, "signal": "unreturned_backlog", "labels": {}, "value": 10.0, "comparison": "gt",
        "threshold": 5.0, "opened_at": None, "resolved_at": None, "url": document["incident"]["url"],
    }
    assert {r.status for r in rows()} == {"sent"}


def test_the_resolution_is_notified_too(incident, secret):
    send_due_incident_notifications(client=Receiver().client())
    resolve_incident(incident_id=incident.pk, value=2)
    receiver = Receiver()

    send_due_incident_notifications(client=receiver.client())

    assert mail.outbox[-1].subject == "[RESOLVED] [critical] Backlog"
    assert "Latest value: 2 (threshold 5)" in mail.outbox[-1].body
    assert json.loads(receiver.requests[0].content)["incident"]["event"] == "resolved"


def test_a_failing_webhook_is_retried_on_the_schedule_then_sent_once(incident, secret):
    receiver = Receiver(503, 0, 200)
    client = receiver.client()
    start = timezone.now()

    send_due_incident_notifications(now=start, client=client)
    [row] = rows(channel="webhook")
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, start + minutes(1))
    assert row.last_error.startswith("HTTP 503")

    send_due_incident_notifications(now=start + minutes(0.5), client=client)  # not due yet
    assert len(receiver.requests) == 1
    send_due_incident_notifications(now=start + minutes(1), client=client)
    [row] = rows(channel="webhook")
    assert (row.attempts, row.next_attempt_at) == (2, start + minutes(6))
    assert "ConnectTimeout" in row.last_error

    send_due_incident_notifications(now=start + minutes(6), client=client)
    send_due_incident_notifications(now=start + minutes(30), client=client)

    [row] = rows(channel="webhook")
    assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 3, start + minutes(6), "")
    assert len(receiver.requests) == 3
    # Every retry is the same message to the receiver.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len(mail.outbox) == 1


def test_after_five_failures_it_gives_up_and_retry_now_gives_one_more_try(incident, secret):
    receiver = Receiver(*[500] * 6)
    client = receiver.client()
    at = timezone.now()
    for delay in (0, 1, 5, 15, 60):
        at += minutes(delay)
        send_due_incident_notifications(now=at, client=client)

    [row] = rows(channel="webhook")
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 5, None)
    send_due_incident_notifications(now=at + timedelta(days=1), client=client)
    assert len(receiver.requests) == 5

    assert retry_incident_notifications(notification_ids=[row.pk]) == 1
    send_due_incident_notifications(client=client)
    [row] = rows(channel="webhook")
    assert (row.status, row.attempts, len(receiver.requests)) == ("failed", 6, 6)


def test_a_failing_mail_server_is_retried(incident, monkeypatch):
    def refuse(self, fail_silently=False):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr(mail.EmailMessage, "send", refuse)
    send_due_incident_notifications(client=Receiver().client())

    [row] = rows(channel="email")
    assert (row.status, row.attempts) == ("pending", 1)
    assert "mail server down" in row.last_error


def test_an_unsigned_webhook_when_no_secret_is_configured(incident, settings):
    settings.ALERT_WEBHOOK_SECRET = ""
    [row] = rows(channel="webhook")

    body, headers = webhook_request(row)

    assert "webhook-signature" not in headers and headers["webhook-id"] == f"incident-notification-{row.pk}"
    assert json.loads(body)["incident"]["id"] == incident.pk


def test_a_row_is_claimed_by_one_sender_at_a_time(incident):
    first = claim_due_incident_notifications()
    second = claim_due_incident_notifications()

    assert len(first) == 2 and second == []
    # A sender that crashed: its rows come back after the lease.
    assert len(claim_due_incident_notifications(now=timezone.now() + minutes(6))) == 2


def test_the_leads_are_emailed_when_the_rule_says_so():
    staff_in(LEAD, email="lead1@example.com")
    staff_in(LEAD, email="lead2@example.com", is_active=False)
    alert_rule = custom_rule(email_recipients="ops@example.com", email_leads=True, webhook_urls=HOOK)

    assert targets_for(alert_rule) == [("email", "ops@example.com"), ("email", "lead1@example.com"),
                                       ("webhook", HOOK)]


def test_a_rule_without_channels_still_records_its_incident():
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    alert_rule = custom_rule(email_recipients="", email_leads=False)

    evaluate(alert_rule)

    assert alert_rule.incidents.count() == 1 and IncidentNotification.objects.count() == 0


def test_the_task_sends_what_is_due(incident):
    IncidentNotification.objects.filter(channel="webhook").delete()

    assert send_incident_notifications() == "sent=1"
    assert len(mail.outbox) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_send_each_notification_once(on_postgres, secret):
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    hooks = "\n".join(f"https://chat.example.com/hooks/{n}" for n in range(15))
    emails = ", ".join(f"person{n}@example.com" for n in range(15))
    evaluate(custom_rule(email_recipients=emails, webhook_urls=hooks))
    receiver = Receiver()
    sent_mail: list[str] = []
    original = mail.EmailMessage.send

    def record(self, fail_silently=False):
        sent_mail.append(self.to[0])
        return original(self, fail_silently=fail_silently)

    mail.EmailMessage.send = record
    try:
        outcomes = run_in_threads(*[
            lambda: send_due_incident_notifications(batch_size=4, client=receiver.client()) for _ in range(4)])
    finally:
        mail.EmailMessage.send = original

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert sum(outcomes) == 30
    assert sorted(sent_mail) == sorted(f"person{n}@example.com" for n in range(15))
    assert sorted(str(r.url) for r in receiver.requests) == sorted(hooks.split("\n"))
    assert IncidentNotification.objects.filter(status="sent").count() == 30


def test_incident_deliveries_use_the_customer_outbox_statuses_the_shared_claim_writes():
    from backoffice.monitoring.models import DeliveryStatus
    from support.models import NotificationStatus

    assert set(DeliveryStatus.values) == set(NotificationStatus.values)
