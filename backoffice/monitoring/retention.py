"""Journal sizes and retention, for the system page and the daily pruning task.

The pruning itself belongs to the journals' app (`orders.retention`); this module schedules
it and reports on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Model
from django.utils import timezone
from django_q.models import Task

from orders.models import OrderEvent, PaymentCheck, ProviderCallback, RetentionRun, TelemetryCounter
from orders.retention import callback_retention, check_retention, last_run, prune_journals

# The task must end well within the cluster's timeout (240 s); what is left waits a day.
TASK_TIME_BUDGET = 180.0

JOURNALS: dict[str, type[Model]] = {
    "callbacks": ProviderCallback,
    "checks": PaymentCheck,
    "events": OrderEvent,
    "telemetry_counters": TelemetryCounter,
}


@dataclass(frozen=True)
class JournalSize:
    name: str
    table: str
    rows: int
    estimated: bool  # the planner's estimate (PostgreSQL), not a count


def journal_sizes() -> list[JournalSize]:
    """Rows per journal: exact counts on SQLite; on PostgreSQL the planner's estimate
    (`pg_class.reltuples`, kept by VACUUM and ANALYZE), as counting millions of rows for a
    page view is not worth it. A table never analyzed is counted."""
    tables = {name: model._meta.db_table for name, model in JOURNALS.items()}
    estimates: dict[str, float] = {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(%s)",
                [list(tables.values())],
            )
            estimates = {name: value for name, value in cursor.fetchall()}
    sizes = []
    for name, table in tables.items():
        estimate = estimates.get(table)
        if estimate is not None and estimate >= 0:
            sizes.append(JournalSize(name, table, int(estimate), True))
        else:
            sizes.append(JournalSize(name, table, JOURNALS[name].objects.count(), False))
    return sizes


@dataclass(frozen=True)
class RetentionStatus:
    callback_days: int
    check_days: int
    last_run: RetentionRun | None
    # The last run is older than two days (the task runs daily): is the cluster running it?
    overdue: bool

    @property
    def last_run_at(self) -> datetime | None:
        return self.last_run.started_at if self.last_run else None


def retention_status(*, now: datetime | None = None) -> RetentionStatus:
    now = now or timezone.now()
    run = last_run()
    return RetentionStatus(
        callback_days=callback_retention().days,
        check_days=check_retention().days,
        last_run=run,
        overdue=run is None or now - run.started_at > timedelta(days=2),
    )


def task_result_retention() -> timedelta:
    return timedelta(days=settings.RETENTION_TASK_RESULT_DAYS)


def prune_task_results(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete finished task results (django-q2 keeps every one with `save_limit: 0`) older than
    RETENTION_TASK_RESULT_DAYS, a batch at a time; the latest result of each schedule is younger
    than that while the cluster runs."""
    cutoff = (now or timezone.now()) - task_result_retention()
    deleted = 0
    while True:
        batch = list(Task.objects.filter(stopped__lt=cutoff).order_by().values_list("pk", flat=True)[:batch_size])
        if not batch:
            return deleted
        deleted += Task.objects.filter(pk__in=batch).delete()[0]


def prune_journals_task() -> str:
    """The daily task (django-q2 schedule `prune-journals`)."""
    report = prune_journals(time_budget=TASK_TIME_BUDGET)
    results = prune_task_results()
    return (f"callbacks={report.callbacks} checks={report.checks} task_results={results} "
            f"{'complete' if report.complete else 'incomplete'}")
