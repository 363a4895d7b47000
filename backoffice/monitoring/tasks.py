"""django-q2 tasks of monitoring: thin wrappers around its services."""

from __future__ import annotations

from backoffice.monitoring.heartbeat import beat


def cluster_heartbeat() -> str:
    row = beat()
    return f"beat at {row.beat_at:%H:%M:%S} from {row.host}:{row.pid}"


def evaluate_alerts() -> str:
    """Every minute: evaluate the alert rules (unless another evaluator took this minute) and
    send due notifications. A cluster running this task is alive, so it beats first: the two
    schedules fall due together and the evaluation must not see the previous, older beat."""
    from backoffice.monitoring.alerts import run_evaluation

    beat()
    result = run_evaluation()
    return "evaluated elsewhere this minute" if result is None else str(result)


def send_incident_notifications() -> str:
    """Every minute: send due incident notifications (retries included)."""
    from backoffice.monitoring.notify import send_due_incident_notifications

    return f"sent={send_due_incident_notifications()}"
