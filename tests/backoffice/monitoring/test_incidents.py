"""Incidents: one per rule and label set, deduplicated, every change an event, acknowledged by
staff in the admin; concurrent evaluators open one incident and notify once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from backoffice.monitoring.alerts import acknowledge_incident, evaluate_rules, open_incident, resolve_incident
from backoffice.monitoring.models import Incident, IncidentEvent, IncidentNotification, IncidentStatus
from orders.models import UnreturnedSnapshot
from tests.backoffice.factories import AGENT, LEAD, PAYMENTS, messages_of, staff_in
from tests.backoffice.monitoring.alert_helpers import custom_rule, evaluate, incidents_of, minutes, notifications_of
from tests.orders.engine_helpers import run_in_threads
from tests.orders.factories import StaffUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def backlog_rule():
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    return custom_rule(email_recipients="oncall@example.com, lead@example.com",
                       webhook_urls="https://chat.example.com/hook")


def test_evaluating_twice_keeps_one_incident_and_one_set_of_notifications(backlog_rule):
    now = timezone.now()
    first = evaluate(backlog_rule, now=now)
    second = evaluate(backlog_rule, now=now + minutes(1))

    [incident] = incidents_of(backlog_rule)
    assert len(first.opened) == 1 and second.opened == []
    assert incident.last_value == 10 and incident.last_evaluated_at == now + minutes(1)
    assert [(n.event.kind, n.channel, n.target) for n in notifications_of(backlog_rule)] == [
        ("opened", "email", "oncall@example.com"),
        ("opened", "email", "lead@example.com"),
        ("opened", "webhook", "https://chat.example.com/hook"),
    ]


def test_a_resolved_incident_notifies_resolution_and_a_new_firing_opens_a_new_incident(backlog_rule):
    now = timezone.now()
    evaluate(backlog_rule, now=now)
    UnreturnedSnapshot.objects.create(taken_at=now + minutes(4), total=1, needs_review=0)
    evaluate(backlog_rule, now=now + minutes(5))
    evaluate(backlog_rule, now=now + minutes(6))  # still clear: nothing more
    UnreturnedSnapshot.objects.create(taken_at=now + minutes(9), total=50, needs_review=0)
    evaluate(backlog_rule, now=now + minutes(10))

    first, second = incidents_of(backlog_rule)
    assert (first.status, first.resolved_at, first.last_value) == ("resolved", now + minutes(5), 1)
    assert second.status == "open" and second.opened_at == now + minutes(10)
    kinds = [n.event.kind for n in notifications_of(backlog_rule)]
    assert kinds == ["opened"] * 3 + ["resolved"] * 3 + ["opened"] * 3
    assert [e.kind for e in first.events.all()] == ["opened", "resolved"]


def test_the_database_refuses_a_second_open_incident_for_the_same_rule_and_labels(backlog_rule):
    open_incident(rule=backlog_rule, labels={"provider": "a"}, value=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Incident.objects.create(rule=backlog_rule, labels={"provider": "a"}, label_key="provider=a",
                                severity="warning", summary="again", threshold=5)
    # Another label set is another incident.
    assert open_incident(rule=backlog_rule, labels={"provider": "b"}, value=1) is not None
    assert open_incident(rule=backlog_rule, labels={"provider": "a"}, value=1) is None


def test_resolving_twice_records_and_notifies_once(backlog_rule):
    incident = open_incident(rule=backlog_rule, labels={}, value=10)

    assert resolve_incident(incident_id=incident.pk, value=1)
    assert not resolve_incident(incident_id=incident.pk, value=1)
    assert IncidentEvent.objects.filter(incident=incident, kind="resolved").count() == 1
    assert IncidentNotification.objects.filter(incident=incident, event__kind="resolved").count() == 3


def test_opening_writes_nothing_when_queueing_the_notifications_fails(backlog_rule, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("template missing")

    monkeypatch.setattr("backoffice.monitoring.alerts.queue_incident_notifications", broken)

    result = evaluate(backlog_rule)

    assert result.errors == ["Backlog above 5: RuntimeError: template missing"]
    assert Incident.objects.count() == 0 and IncidentEvent.objects.count() == 0


# --- acknowledging -----------------------------------------------------------------------------


def test_acknowledging_records_who_and_when_once(backlog_rule):
    incident = open_incident(rule=backlog_rule, labels={}, value=10)
    agent, other = StaffUserFactory(), StaffUserFactory()
    at = timezone.now()

    assert acknowledge_incident(incident_id=incident.pk, user=agent, now=at)
    assert not acknowledge_incident(incident_id=incident.pk, user=other, now=at + minutes(1))

    incident.refresh_from_db()
    assert (incident.acknowledged_by, incident.acknowledged_at, incident.status) == (agent, at, "open")
    event = incident.events.get(kind="acknowledged")
    assert (event.actor, event.at) == (agent, at)


def test_an_agent_acknowledges_with_the_button(client, backlog_rule):
    incident = open_incident(rule=backlog_rule, labels={}, value=10)
    agent = staff_in(AGENT)
    client.force_login(agent)
    page = reverse("admin:backoffice_incident_change", args=[incident.pk])

    assert 'id="incident-acknowledge"' in client.get(page).content.decode()
    response = client.post(reverse("admin:backoffice_incident_acknowledge", args=[incident.pk]))

    assert response.status_code == 302 and response.url == page
    assert messages_of(response) == ["Incident acknowledged."]
    incident.refresh_from_db()
    assert incident.acknowledged_by == agent and incident.acknowledged_at is not None
    assert 'id="incident-acknowledge"' not in client.get(page).content.decode()


def test_acknowledging_needs_the_permission_and_a_post(client, backlog_rule):
    incident = open_incident(rule=backlog_rule, labels={}, value=10)
    url = reverse("admin:backoffice_incident_acknowledge", args=[incident.pk])
    client.force_login(staff_in(AGENT))
    assert client.get(url).status_code == 405

    client.force_login(StaffUserFactory())  # staff, no group
    assert client.post(url).status_code == 403
    assert Incident.objects.get(pk=incident.pk).acknowledged_at is None


def test_the_acknowledge_action_on_the_list(client, backlog_rule):
    incidents = [open_incident(rule=backlog_rule, labels={"n": str(n)}, value=10) for n in range(2)]
    client.force_login(staff_in(PAYMENTS))

    response = client.post(reverse("admin:backoffice_incident_changelist"), {
        "action": "acknowledge_selected", "_selected_action": [i.pk for i in incidents]})

    assert response.status_code == 302
    assert Incident.objects.filter(acknowledged_at__isnull=False).count() == 2


def test_the_incident_admin_shows_facts_history_and_deliveries_read_only(client, backlog_rule):
    evaluate(backlog_rule)
    [incident] = incidents_of(backlog_rule)
    client.force_login(staff_in(AGENT))

    listing = client.get(reverse("admin:backoffice_incident_changelist") + "?status__exact=open")
    page = client.get(reverse("admin:backoffice_incident_change", args=[incident.pk]))

    assert incident.summary in listing.content.decode()
    html = page.content.decode()
    assert page.status_code == 200
    assert "oncall@example.com" in html and "https://chat.example.com/hook" in html
    assert 'name="_save"' not in html  # nothing to edit
    assert client.post(reverse("admin:backoffice_incident_change", args=[incident.pk]), {}).status_code == 403


def test_a_lead_retries_failed_deliveries_from_the_incident_page(client, backlog_rule):
    incident = open_incident(rule=backlog_rule, labels={}, value=10)
    IncidentNotification.objects.filter(incident=incident).update(status="failed", attempts=5, next_attempt_at=None)
    page = reverse("admin:backoffice_incident_change", args=[incident.pk])
    retry = reverse("admin:backoffice_incident_retry_notifications", args=[incident.pk])

    client.force_login(staff_in(AGENT))
    assert 'id="incident-retry"' not in client.get(page).content.decode()
    assert client.post(retry).status_code == 403

    client.force_login(staff_in(LEAD))
    assert 'id="incident-retry"' in client.get(page).content.decode()
    client.post(retry)
    assert set(IncidentNotification.objects.filter(incident=incident).values_list("status", flat=True)) == {"pending"}


def test_leads_manage_rules_and_agents_only_read_them(client, backlog_rule):
    add = reverse("admin:backoffice_alertrule_add")
    client.force_login(staff_in(AGENT))
    assert client.get(add).status_code == 403
    assert client.get(reverse("admin:backoffice_alertrule_change", args=[backlog_rule.pk])).status_code == 200

    client.force_login(staff_in(LEAD))
    response = client.post(add, {
        "name": "Stuck at sandbox", "signal": "provider_stuck_attempts", "labels": '{"provider": "sandbox"}',
        "comparison": "gte", "threshold": "5", "window_minutes": "10", "severity": "critical",
        "email_recipients": "a@example.com\nb@example.com", "webhook_urls": "", "enabled": "on",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    created = backlog_rule.__class__.objects.get(name="Stuck at sandbox")
    assert created.labels == {"provider": "sandbox"} and created.email_list == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"labels": '{"merchant": "x"}'}, "labels", "has no label merchant"),
        ({"labels": '["provider"]'}, "labels", "JSON object"),
        ({"threshold": "many"}, "threshold", "Enter a number"),
        ({"window_minutes": "0"}, "window_minutes", "greater than or equal to 1"),
        ({"email_recipients": "not-an-address"}, "email_recipients", "not an email address"),
        ({"webhook_urls": "ftp://example.com/x"}, "webhook_urls", "not an http or https URL"),
    ],
)
def test_rule_validation(client, changes, field, message):
    client.force_login(staff_in(LEAD))
    data = {"name": "r", "signal": "provider_stuck_attempts", "labels": "{}", "comparison": "gt", "threshold": "5",
            "window_minutes": "10", "severity": "warning", "email_recipients": "", "webhook_urls": "",
            **changes}

    response = client.post(reverse("admin:backoffice_alertrule_add"), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])


def test_installed_defaults_cannot_be_deleted_only_disabled(client):
    from backoffice.monitoring.models import AlertRule

    client.force_login(staff_in(LEAD))
    default = AlertRule.objects.get(key="sla-breaches")

    assert client.get(reverse("admin:backoffice_alertrule_delete", args=[default.pk])).status_code == 403


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluators_open_one_incident_and_notify_once(on_postgres):
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    alert_rule = custom_rule(email_recipients="oncall@example.com")
    now = timezone.now()
    rules = lambda: alert_rule.__class__.objects.filter(pk=alert_rule.pk)  # noqa: E731

    outcomes = run_in_threads(*[lambda: evaluate_rules(now=now, rules=rules()) for _ in range(4)])

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert sum(len(o.opened) for o in outcomes) == 1
    assert Incident.objects.filter(rule=alert_rule, status=IncidentStatus.OPEN).count() == 1
    assert IncidentNotification.objects.filter(incident__rule=alert_rule).count() == 1

    UnreturnedSnapshot.objects.create(taken_at=now + timedelta(minutes=1), total=0, needs_review=0)
    later = now + timedelta(minutes=2)
    outcomes = run_in_threads(*[lambda: evaluate_rules(now=later, rules=rules()) for _ in range(4)])

    assert sum(len(o.resolved) for o in outcomes) == 1
    assert IncidentNotification.objects.filter(incident__rule=alert_rule, event__kind="resolved").count() == 1
