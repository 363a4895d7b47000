"""django-q2 tasks of monitoring: thin wrappers around its services."""

from __future__ import annotations

from backoffice.monitoring.heartbeat import beat


def cluster_heartbeat() -> str:
    row = beat()
    return f"beat at {row.beat_at:%H:%M:%S} from {row.host}:{row.pid}"
