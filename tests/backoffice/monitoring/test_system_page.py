"""The staff system page: cluster, schedules, queue, incidents, provider health, journals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule, Task

from backoffice.monitoring.alerts import open_incident, resolve_incident
from backoffice.monitoring.heartbeat import beat
from orders.models import PaymentCheck
from orders.schedules import install_schedules
from tests.backoffice.factories import AGENT, staff_in
from tests.backoffice.monitoring.alert_helpers import custom_rule
from tests.orders.engine_helpers import pending_order
from tests.orders.factories import StaffUserFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/admin/system/"


def test_the_url():
    assert reverse("admin:system") == URL


def test_non_staff_are_sent_to_the_login_page(client):
    client.force_login(UserFactory())

    response = client.get(URL)

    assert response.status_code == 302 and "/login/" in response.url


def test_staff_without_the_incident_permission_are_refused(client):
    client.force_login(StaffUserFactory())

    assert client.get(URL).status_code == 403


def test_a_cluster_that_never_beat_and_nothing_else_yet(client):
    client.force_login(staff_in(AGENT))

    html = client.get(URL).content.decode()

    assert "never seen" in html and "No incident so far." in html
    assert "No schedule is installed" in html and "No provider was checked in the last hour." in html


def _fill(incidents: int, *, checks: int):
    rule = custom_rule()
    for n in range(incidents):
        incident = open_incident(rule=rule, labels={"n": str(n)}, value=n)
        if n % 2:
            resolve_incident(incident_id=incident.pk, value=0)
    _order, attempt = pending_order(provider="sandbox")
    PaymentCheck.objects.bulk_create([
        PaymentCheck(attempt=attempt, source="scheduled", error_kind="timeout" if n % 4 == 0 else "none",
                     reported_status="" if n % 4 == 0 else "pending", latency_ms=100 + n)
        for n in range(checks)
    ])


def test_the_page_shows_every_section(client):
    beat()
    install_schedules()
    schedule = Schedule.objects.get(name="evaluate-alerts")
    now = timezone.now()
    Task.objects.create(id="t1", name="t1", func=schedule.func, started=now - timedelta(seconds=3), stopped=now,
                        success=True, result="opened=1 resolved=0 firing=1 errors=0")
    Schedule.objects.filter(pk=schedule.pk).update(task="t1")
    _fill(3, checks=8)
    client.force_login(staff_in(AGENT))

    response = client.get(URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "running" in html  # the cluster
    assert "evaluate-alerts" in html and "opened=1 resolved=0 firing=1 errors=0" in html
    assert "Incidents: 2 open" in html
    # Open incidents first.
    rows = [incident.summary for incident in response.context["incidents"]]
    assert [i.is_open for i in response.context["incidents"]] == [True, True, False]
    assert rows[0] in html
    [provider] = response.context["providers"]
    assert (provider["provider"], provider["checks"], provider["errors"], provider["error_pct"]) == ("sandbox", 8, 2, 25.0)
    assert "Tasks waiting in the queue" in html
    assert 'id="sys-journals"' in html


def test_the_page_runs_the_same_queries_for_few_and_many_rows(client):
    beat()
    install_schedules()
    client.force_login(staff_in(AGENT))
    _fill(1, checks=2)
    client.get(URL)  # warm caches (content types, permissions)

    with CaptureQueriesContext(connection) as few:
        assert client.get(URL).status_code == 200
    _fill(12, checks=40)
    with CaptureQueriesContext(connection) as many:
        assert client.get(URL).status_code == 200

    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def test_the_dashboard_links_to_the_page_with_the_open_incidents(client):
    incident_rule = custom_rule()
    open_incident(rule=incident_rule, labels={}, value=9)
    client.force_login(staff_in(AGENT))

    html = client.get(reverse("admin:index")).content.decode()

    assert f'href="{URL}"' in html and "1 open incident" in html


def test_a_broker_that_cannot_be_read_is_shown_not_a_page_error(client, monkeypatch):
    def down(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("backoffice.monitoring.queue.queue_stats", down)
    client.force_login(staff_in(AGENT))

    response = client.get(URL)

    assert response.status_code == 200 and "the broker cannot be read" in response.content.decode()
