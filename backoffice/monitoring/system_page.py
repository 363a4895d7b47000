"""The staff system page (`/admin/system/`): is the machinery running?

Cluster status (heartbeat, django-q2's own statistics when the broker shares them), the
schedules with their last and next run, the queue depth, the alert evaluator, recent
incidents (open first), provider health over the last hour, and the journals' sizes and
retention. Each section is a handful of queries whatever the number of rows behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Value, When
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backoffice.monitoring.alerts import EVALUATION_INTERVAL, last_evaluation
from backoffice.monitoring.health import schedule_grace
from backoffice.monitoring.heartbeat import STALE_AFTER, cluster_status
from backoffice.monitoring.models import Incident, IncidentStatus
from orders.selectors import provider_check_stats

log = logging.getLogger(__name__)

RECENT_INCIDENTS = 15
PROVIDER_WINDOW = timedelta(hours=1)
# A schedule whose next run is this far in the past is not being picked up (the scheduler looks
# every 30 s or so): the cluster is down or stuck.
JOURNAL_LABELS = {
    "callbacks": gettext_lazy("Provider callbacks"),
    "checks": gettext_lazy("Payment checks"),
    "events": gettext_lazy("Order events"),
    "telemetry_counters": gettext_lazy("Telemetry counters"),
}


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    func: str
    every_minutes: int | None
    next_run: datetime | None
    late: bool
    last_started: datetime | None
    last_stopped: datetime | None
    last_success: bool | None
    last_result: str
    pending: bool  # queued or running: its task has no result yet


def schedules(*, now: datetime) -> list[ScheduleRow]:
    """Every schedule with its next run and its latest task (two queries)."""
    from django_q.models import Schedule, Task

    rows = list(Schedule.objects.order_by("name"))
    tasks = {task.id: task for task in Task.objects.filter(id__in=[s.task for s in rows if s.task])
             .only("id", "started", "stopped", "success", "result")}
    out = []
    for schedule in rows:
        task = tasks.get(schedule.task) if schedule.task else None
        result = ""
        if task is not None and task.result is not None:
            result = str(task.result)[:160]
        out.append(ScheduleRow(
            name=schedule.name or schedule.func,
            func=schedule.func,
            every_minutes=schedule.minutes if schedule.schedule_type == Schedule.MINUTES else None,
            next_run=schedule.next_run,
            late=bool(schedule.next_run and now - schedule.next_run > schedule_grace()),
            last_started=task.started if task else None,
            last_stopped=task.stopped if task else None,
            last_success=task.success if task else None,
            last_result=result,
            pending=bool(schedule.task) and task is None,
        ))
    return out


def queue() -> dict | None:
    """Tasks waiting in the broker and the age of the oldest (`backoffice.monitoring.queue`, shared
    with readiness and the metrics); None if the broker cannot be asked."""
    from backoffice.monitoring.queue import queue_stats

    now = timezone.now()
    try:
        stats = queue_stats(now=now)
    except Exception:  # noqa: BLE001 - a broker that is down is a fact to show, not a page error
        log.warning("could not read the task queue", exc_info=True)
        return None
    return {"depth": stats.depth, "oldest_age_seconds": int(stats.oldest_age_seconds(now))}


def cluster_stats() -> list[dict] | None:
    """django-q2's statistics of the running clusters, from the broker's cache (None when it
    cannot be read; an empty list when no cluster reports)."""
    try:
        from django_q.status import Stat

        stats = Stat.get_all()
    except Exception:  # noqa: BLE001
        log.warning("could not read the cluster statistics", exc_info=True)
        return None
    return [
        {
            "cluster_id": str(stat.cluster_id),
            "host": stat.host,
            "pid": stat.pid,
            "status": stat.status,
            "workers": len(stat.workers or []),
            "reincarnations": stat.reincarnations,
            "uptime_seconds": int(stat.uptime()) if stat.tob else None,
            "task_q_size": stat.task_q_size,
        }
        for stat in stats
    ]


def recent_incidents() -> list[Incident]:
    open_first = Case(When(status=IncidentStatus.OPEN, then=Value(0)), default=Value(1), output_field=IntegerField())
    return list(
        Incident.objects.select_related("rule", "acknowledged_by").annotate(open_first=open_first)
        .order_by("open_first", "-opened_at", "-id")[:RECENT_INCIDENTS]
    )


def journals() -> dict:
    """Journal sizes and retention, from `backoffice.monitoring.retention`."""
    try:
        from backoffice.monitoring.retention import journal_sizes, retention_status
    except ImportError:
        return {"available": False}
    sizes = [
        {"name": size.name, "label": JOURNAL_LABELS.get(size.name, size.name), "rows": size.rows,
         "estimated": size.estimated}
        for size in journal_sizes()
    ]
    return {"available": True, "sizes": sizes, "retention": retention_status()}


def system_context(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    incidents = recent_incidents()
    evaluator = last_evaluation()
    return {
        "now": now,
        "cluster": cluster_status(now=now),
        "stale_after_seconds": int(STALE_AFTER.total_seconds()),
        "cluster_stats": cluster_stats(),
        "schedules": schedules(now=now),
        "queue": queue(),
        "evaluator": evaluator,
        "evaluator_late": evaluator is None or now - evaluator.beat_at > EVALUATION_INTERVAL + STALE_AFTER,
        "incidents": incidents,
        "open_incidents": Incident.objects.filter(status=IncidentStatus.OPEN).count(),
        "providers": [
            {"provider": row.provider, "checks": row.checks, "errors": row.errors,
             "error_pct": round(100 * row.error_rate, 1), "p95_latency_ms": row.p95_latency_ms}
            for row in provider_check_stats(since=now - PROVIDER_WINDOW)
        ],
        "journals": journals(),
    }


def system_link_context(request) -> dict:
    """The dashboard's link to this page, with the number of open incidents (one query)."""
    if not request.user.has_perm("backoffice.view_incident"):
        return {}
    return {"system_link": {"url": reverse("admin:system"),
                            "open_incidents": Incident.objects.filter(status=IncidentStatus.OPEN).count()}}


def system_view(request):
    """Staff only (the admin site's login), with the permission to view incidents."""
    if not request.user.has_perm("backoffice.view_incident"):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": _("System status"),
        **system_context(),
    }
    return TemplateResponse(request, "admin/monitoring/system.html", context)
