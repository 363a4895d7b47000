"""The task cluster's heartbeat: a scheduled task writes it, readiness and alerts read its age.

django-q2 keeps its own cluster statistics in the broker's cache, which a web process on the
embedded default cannot always see; a row in the database is seen by every process."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from backoffice.monitoring.models import Heartbeat

CLUSTER = "task-cluster"
# The scheduler looks for due schedules about every 30 s and the beat is due every minute, so
# a healthy cluster's beat is at most about 90 s old.
STALE_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class ClusterStatus:
    beat_at: datetime | None
    age: timedelta | None
    host: str
    pid: int | None

    @property
    def alive(self) -> bool:
        return self.age is not None and self.age < STALE_AFTER

    @property
    def age_seconds(self) -> float | None:
        return None if self.age is None else max(self.age.total_seconds(), 0.0)


def beat(name: str = CLUSTER, *, now: datetime | None = None, details: dict | None = None) -> Heartbeat:
    row, _created = Heartbeat.objects.update_or_create(
        name=name,
        defaults={"beat_at": now or timezone.now(), "host": socket.gethostname()[:255], "pid": os.getpid(),
                  "details": details or {}},
    )
    return row


def cluster_status(*, now: datetime | None = None) -> ClusterStatus:
    row = Heartbeat.objects.filter(name=CLUSTER).first()
    if row is None:
        return ClusterStatus(beat_at=None, age=None, host="", pid=None)
    return ClusterStatus(beat_at=row.beat_at, age=(now or timezone.now()) - row.beat_at, host=row.host, pid=row.pid)
