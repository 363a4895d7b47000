"""`/healthz` (the process answers) and `/readyz` (it can do its work), for load balancers,
orchestrators and uptime checks (docs/observability.md).

Both are unauthenticated and cheap, touch no session, and are never cached. `/readyz` answers
200 when every check passes and 503 otherwise, with one entry per check in the JSON. It shows
no secrets: no connection strings, no host names, no error messages (which can hold either),
only the class of an error.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from backoffice.monitoring import queue
from backoffice.monitoring.heartbeat import STALE_AFTER, cluster_status
from orders.models import PaymentCheck

log = logging.getLogger(__name__)

# The provider summary looks this far back; it informs, it never fails readiness.
PROVIDER_WINDOW = timedelta(minutes=10)
LATE_SCHEDULES_SHOWN = 20


def _error(exc: BaseException) -> str:
    # The class only: messages can carry host names, DSNs or queries.
    return type(exc).__name__


@dataclass
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(check["ok"] or check.get("informational") for check in self.checks.values())

    def as_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not_ready", "checks": self.checks}


# Once the plan is empty it stays empty for this process's code: a migration added later
# comes with new code, hence a new process. Until then the (slow) plan is built each time.
_migrated = threading.Event()


def check_database() -> dict[str, Any]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return {"ok": False, "error": _error(exc)}
    return {"ok": True, "vendor": connection.vendor, "ms": round((time.monotonic() - started) * 1000, 1)}


def check_migrations() -> dict[str, Any]:
    if _migrated.is_set():
        return {"ok": True, "unapplied": 0}
    try:
        executor = MigrationExecutor(connection)
        unapplied = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": _error(exc)}
    if not unapplied:
        _migrated.set()
    return {"ok": not unapplied, "unapplied": unapplied}


def check_cluster(*, now: datetime) -> dict[str, Any]:
    status = cluster_status(now=now)
    return {
        "ok": status.alive,
        "last_beat": status.beat_at.isoformat() if status.beat_at else None,
        "age_seconds": None if status.age_seconds is None else round(status.age_seconds, 1),
        "stale_after_seconds": int(STALE_AFTER.total_seconds()),
    }


def late_schedules(*, now: datetime) -> list[dict[str, Any]]:
    """Repeating schedules whose next run is more than the grace period in the past."""
    from django_q.models import Schedule

    grace = schedule_grace()
    rows = (
        Schedule.objects.exclude(repeats=0)
        .filter(next_run__lt=now - grace)
        .order_by("next_run", "pk")
        .values_list("name", "next_run")[:LATE_SCHEDULES_SHOWN]
    )
    return [
        {"name": name or "", "next_run": next_run.isoformat(), "late_seconds": int((now - next_run).total_seconds())}
        for name, next_run in rows
    ]


def schedule_grace() -> timedelta:
    """How far past its next run a schedule may be before it counts as late (readiness and
    the system page agree)."""
    return timedelta(seconds=settings.READYZ_SCHEDULE_GRACE_SECONDS)


def check_schedules(*, now: datetime) -> dict[str, Any]:
    late = late_schedules(now=now)
    return {"ok": not late, "grace_seconds": settings.READYZ_SCHEDULE_GRACE_SECONDS, "late": late}


def check_broker(*, database_ok: bool) -> dict[str, Any]:
    kind = queue.broker_kind()
    if kind == "orm":
        # The ORM broker's queue is a table of the database checked above.
        return {"ok": database_ok, "kind": kind}
    try:
        queue.ping()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "kind": kind, "error": _error(exc)}
    return {"ok": True, "kind": kind}


def provider_summary(*, now: datetime) -> dict[str, Any]:
    """Per provider, checks and errors of the last ten minutes (one aggregate query)."""
    rows = (
        PaymentCheck.objects.filter(checked_at__gte=now - PROVIDER_WINDOW)
        .values_list("attempt__provider")
        .annotate(n=Count("pk"), errors=Count("pk", filter=~Q(error_kind=PaymentCheck.ErrorKind.NONE)))
        .order_by("attempt__provider")
    )
    return {
        provider: {"checks": n, "errors": errors, "error_rate": round(errors / n, 3) if n else 0.0}
        for provider, n, errors in rows
    }


def check_providers(*, now: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ok": True,
        "informational": True,
        "note": "Provider reachability is reported, never a reason to take this process out of service.",
        "window_seconds": int(PROVIDER_WINDOW.total_seconds()),
    }
    try:
        entry["providers"] = provider_summary(now=now)
    except Exception as exc:  # noqa: BLE001
        entry.update(ok=False, error=_error(exc))
    return entry


def readiness(*, now: datetime | None = None) -> Readiness:
    now = now or timezone.now()
    report = Readiness()
    report.checks["database"] = check_database()
    database_ok = report.checks["database"]["ok"]
    if database_ok:
        for name, check in (
            ("migrations", check_migrations),
            ("cluster", lambda: check_cluster(now=now)),
            ("schedules", lambda: check_schedules(now=now)),
        ):
            try:
                report.checks[name] = check()
            except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                report.checks[name] = {"ok": False, "error": _error(exc)}
    else:
        for name in ("migrations", "cluster", "schedules"):
            report.checks[name] = {"ok": False, "error": "database unavailable"}
    report.checks["broker"] = check_broker(database_ok=database_ok)
    report.checks["providers"] = (
        check_providers(now=now) if database_ok
        else {"ok": False, "informational": True, "error": "database unavailable"}
    )
    return report


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests. No database: a database outage must not make
    an orchestrator restart every web process."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    report = readiness()
    response = JsonResponse(report.as_json(), status=200 if report.ready else 503)
    if not report.ready:
        # One warning naming the failing checks instead of Django's generic "Service
        # Unavailable" error line on every probe (a probe may come every few seconds).
        log.warning("not ready: %s", ", ".join(name for name, check in report.checks.items() if not check["ok"]))
        response._has_been_logged = True  # django.utils.log.log_response skips it
    return response
