from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.monitoring.heartbeat import STALE_AFTER, beat, cluster_status
from backoffice.monitoring.models import Heartbeat
from backoffice.monitoring.tasks import cluster_heartbeat
from orders.schedules import SCHEDULES

pytestmark = pytest.mark.django_db


def test_a_cluster_that_never_beat_is_not_alive():
    status = cluster_status()

    assert status.beat_at is None
    assert not status.alive


def test_the_heartbeat_task_keeps_one_row_with_the_latest_beat():
    cluster_heartbeat()
    cluster_heartbeat()

    assert Heartbeat.objects.count() == 1
    assert cluster_status().alive


def test_a_beat_older_than_two_minutes_is_stale():
    now = timezone.now()
    beat(now=now - STALE_AFTER - timedelta(seconds=1))

    status = cluster_status(now=now)

    assert not status.alive
    assert status.age_seconds == pytest.approx(121, abs=0.5)


def test_the_heartbeat_is_scheduled_every_minute():
    spec = next(spec for spec in SCHEDULES if spec["name"] == "cluster-heartbeat")

    assert spec == {"name": "cluster-heartbeat", "func": "backoffice.monitoring.tasks.cluster_heartbeat", "minutes": 1}
