"""The task queue as operations see it: is the broker reachable, how many tasks wait, and how
long the oldest has waited. Used by `/readyz`, `/metrics` and the system page.

django-q2 records no enqueue time a broker can be asked for, but every task package carries
one: `async_task` stamps `started` (the enqueue time) before signing the package. So the age
of the oldest task is read from the package at the head of the queue:

- ORM broker: waiting tasks are the `OrmQ` rows of our cluster whose `lock` has passed (a
  fresh task's lock is its enqueue time; a task taken by a worker is locked until its retry
  time). The head is the row with the earliest lock; one query reads it and the depth, over a
  table that holds only the tasks not yet done.
- Redis broker: the queue is a list (pushed at the tail, popped at the head), so the head is
  `LINDEX 0`; the depth is `LLEN`. A client with short timeouts is used, so a Redis that does
  not answer makes readiness fail fast instead of hanging.

A package that cannot be read (signed with another secret) falls back to its row's lock time
(ORM) or reports no age (Redis).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Window
from django.utils import timezone

REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_enqueued_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float:
        if self.oldest_enqueued_at is None:
            return 0.0
        return max((now - self.oldest_enqueued_at).total_seconds(), 0.0)


def broker_kind() -> str:
    return "redis" if settings.Q_CLUSTER.get("redis") else "orm"


def _list_key() -> str:
    from django_q.conf import Conf

    return Conf.CLUSTER_NAME


@functools.lru_cache(maxsize=1)
def _redis_client():
    import redis

    return redis.Redis.from_url(settings.Q_CLUSTER["redis"], socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_timeout=REDIS_TIMEOUT_SECONDS)


def _redis_queue_key() -> str:
    # As django_q.brokers.redis_broker.Redis names its list.
    return f"django_q:{_list_key()}:q"


def _enqueued_at(payload) -> datetime | None:
    from django_q.signing import SignedPackage

    try:
        started = SignedPackage.loads(payload).get("started")
    except Exception:  # noqa: BLE001 - a package we cannot read has no age to report
        return None
    return started if isinstance(started, datetime) else None


def ping() -> None:
    """Raises when the broker does not answer. The ORM broker is the database, which readiness
    checks on its own."""
    if broker_kind() == "redis":
        _redis_client().ping()


def queue_stats(*, now: datetime | None = None) -> QueueStats:
    """Tasks waiting for a worker, and the enqueue time of the oldest (one query, or two commands)."""
    now = now or timezone.now()
    if broker_kind() == "redis":
        client = _redis_client()
        key = _redis_queue_key()
        depth = int(client.llen(key))
        head = client.lindex(key, 0) if depth else None
        return QueueStats(depth, _enqueued_at(head) if head is not None else None)

    from django_q.conf import Conf
    from django_q.models import OrmQ

    # The head and, through a window over the whole filtered set, the depth: one query.
    head = (
        OrmQ.objects.using(Conf.ORM).filter(key=_list_key(), lock__lte=now)
        .annotate(depth=Window(Count("pk")))
        .order_by("lock", "pk")
        .values_list("payload", "lock", "depth")
        .first()
    )
    if head is None:
        return QueueStats(0, None)
    payload, lock, depth = head
    return QueueStats(depth, _enqueued_at(payload) or lock)
