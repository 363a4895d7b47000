"""/healthz and /readyz: unauthenticated, cheap, never cached; readiness fails on a stale
cluster heartbeat or a late schedule, and shows no secrets."""

from __future__ import annotations

import logging

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from backoffice.monitoring import health, queue
from backoffice.monitoring.heartbeat import STALE_AFTER, beat
from orders.models import PaymentCheck
from tests.orders.engine_helpers import pending_order


@pytest.fixture
def all_good(db):
    """A live cluster and schedules that run on time."""
    beat()
    now = timezone.now()
    Schedule.objects.create(name="every-minute", func="math.floor", schedule_type=Schedule.MINUTES, minutes=1,
                            repeats=-1, next_run=now + timedelta(seconds=30))
    # Done long ago: a schedule without repeats left is never late.
    Schedule.objects.create(name="once", func="math.floor", schedule_type=Schedule.ONCE, repeats=0,
                            next_run=now - timedelta(days=3))


def readyz(client):
    response = client.get("/readyz")
    return response, response.json()


# --- /healthz -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_without_a_query(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "max-age=0" in response["Cache-Control"]
    assert not response.cookies


def test_healthz_answers_without_any_database_access(client):
    # No database fixture: pytest-django refuses every connection, as a database outage would.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["X-Request-ID"]


# --- /readyz --------------------------------------------------------------------------------------


def test_ready_when_everything_is_in_order(client, all_good):
    response, data = readyz(client)

    assert response.status_code == 200, data
    assert data["status"] == "ready"
    assert set(data["checks"]) == {"database", "migrations", "cluster", "schedules", "broker", "providers"}
    assert all(check["ok"] for check in data["checks"].values())
    assert data["checks"]["schedules"]["late"] == []
    assert data["checks"]["broker"]["kind"] == queue.broker_kind()
    assert "max-age=0" in response["Cache-Control"]
    assert not response.cookies


def test_a_stale_cluster_heartbeat_makes_the_process_unready(client, all_good):
    beat(now=timezone.now() - STALE_AFTER - timedelta(seconds=5))

    response, data = readyz(client)

    assert response.status_code == 503
    assert data["status"] == "not_ready"
    assert data["checks"]["cluster"]["ok"] is False
    assert data["checks"]["cluster"]["age_seconds"] >= 125
    assert data["checks"]["database"]["ok"] is True


def test_an_unready_probe_logs_one_warning_naming_the_failing_check_and_no_error(client, all_good, caplog):
    beat(now=timezone.now() - STALE_AFTER - timedelta(seconds=5))

    with caplog.at_level(logging.INFO):
        readyz(client)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert errors == []
    assert warnings == ["not ready: cluster"]


def test_a_cluster_that_never_beat_makes_the_process_unready(client, db):
    response, data = readyz(client)

    assert response.status_code == 503
    assert data["checks"]["cluster"] == {"ok": False, "last_beat": None, "age_seconds": None,
                                         "stale_after_seconds": 120}


def test_a_late_schedule_makes_the_process_unready_and_is_listed(client, all_good, settings):
    settings.READYZ_SCHEDULE_GRACE_SECONDS = 300
    now = timezone.now()
    Schedule.objects.create(name="sweep-unreturned", func="math.floor", schedule_type=Schedule.MINUTES, minutes=1,
                            repeats=-1, next_run=now - timedelta(minutes=12))
    # Late, but within the grace period: the scheduler looks only every 30 seconds.
    Schedule.objects.create(name="just-due", func="math.floor", schedule_type=Schedule.MINUTES, minutes=1,
                            repeats=-1, next_run=now - timedelta(minutes=2))

    response, data = readyz(client)

    assert response.status_code == 503
    schedules = data["checks"]["schedules"]
    assert schedules["ok"] is False
    assert [entry["name"] for entry in schedules["late"]] == ["sweep-unreturned"]
    assert 12 * 60 <= schedules["late"][0]["late_seconds"] < 13 * 60
    assert data["checks"]["cluster"]["ok"] is True


def test_unapplied_migrations_make_the_process_unready(client, all_good, monkeypatch):
    monkeypatch.setattr(health, "_migrated", type(health._migrated)())  # nothing remembered
    monkeypatch.setattr(health.MigrationExecutor, "migration_plan", lambda self, targets: [("orders", "0099_next")])

    response, data = readyz(client)

    assert response.status_code == 503
    assert data["checks"]["migrations"] == {"ok": False, "unapplied": 1}


def test_a_migrated_database_is_remembered_by_the_process(client, all_good, monkeypatch):
    monkeypatch.setattr(health, "_migrated", type(health._migrated)())
    assert readyz(client)[1]["checks"]["migrations"]["ok"]

    def slow_plan(self, targets):
        raise AssertionError("the plan is built once per process")

    monkeypatch.setattr(health.MigrationExecutor, "migration_plan", slow_plan)

    assert readyz(client)[1]["checks"]["migrations"] == {"ok": True, "unapplied": 0}


def test_an_unreachable_database_fails_readiness_without_leaking_its_address(client, all_good, monkeypatch):
    from django.db import OperationalError

    def down(*args, **kwargs):
        raise OperationalError('connection to server at "db.internal" (10.0.0.7), port 5432 failed: '
                               'password authentication failed for user "recovery"')

    class Unreachable:
        vendor = connection.vendor
        cursor = staticmethod(down)

    monkeypatch.setattr(health, "connection", Unreachable())

    response, data = readyz(client)

    assert response.status_code == 503
    assert data["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    if queue.broker_kind() == "orm":  # the queue is a table of the unreachable database
        assert data["checks"]["broker"] == {"ok": False, "kind": "orm"}
    body = response.content.decode()
    assert "db.internal" not in body and "10.0.0.7" not in body and "recovery" not in body


def test_an_unreachable_redis_broker_fails_readiness(client, all_good, settings, monkeypatch):
    monkeypatch.setitem(settings.Q_CLUSTER, "redis", "redis://:hunter2@redis.internal:6379/0")

    class Unreachable:
        def ping(self):
            raise ConnectionError("Error connecting to redis.internal:6379 with password hunter2")

    monkeypatch.setattr(queue, "_redis_client", lambda: Unreachable())

    response, data = readyz(client)

    assert response.status_code == 503
    assert data["checks"]["broker"] == {"ok": False, "kind": "redis", "error": "ConnectionError"}
    assert "hunter2" not in response.content.decode()


def test_provider_errors_are_reported_but_do_not_fail_readiness(client, all_good):
    _order, attempt = pending_order()
    now = timezone.now()
    for n in range(4):
        PaymentCheck.objects.create(attempt=attempt, source="scheduled", error_kind="timeout", checked_at=now)
    PaymentCheck.objects.create(attempt=attempt, source="scheduled", reported_status="pending", checked_at=now)
    # Outside the ten-minute window.
    PaymentCheck.objects.create(attempt=attempt, source="scheduled", error_kind="timeout",
                                checked_at=now - timedelta(minutes=11))

    response, data = readyz(client)

    assert response.status_code == 200
    providers = data["checks"]["providers"]
    assert providers["informational"] is True
    assert providers["window_seconds"] == 600
    assert providers["providers"] == {"sandbox": {"checks": 5, "errors": 4, "error_rate": 0.8}}


def test_readyz_uses_no_session_and_a_few_queries(client, all_good, monkeypatch):
    monkeypatch.setattr(health, "_migrated", type(health._migrated)())
    readyz(client)  # remember the migration plan

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/readyz")

    assert response.status_code == 200
    assert not any("django_session" in q["sql"] for q in queries.captured_queries)
    assert len(queries) <= 5
    json.loads(response.content)
