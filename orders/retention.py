"""Retention of the engine's journals: raw payloads are pruned, the rows and events are kept.

Provider callbacks keep their raw body and (masked) headers, and checks an excerpt of the
provider's answer: evidence while an order is being worked on, personal data after that.
After `RETENTION_CALLBACK_DAYS` / `RETENTION_CHECK_DAYS` (default 90) the payload is
emptied and the row stamped (`body_pruned_at`, `response_pruned_at`). The rows stay: a
callback's unique (provider, event id) still makes a late redelivery harmless, and the
diagnosis, the timeline and every `OrderEvent` keep what they need (statuses, amounts,
error kinds, times).

Rows are pruned oldest first in batches of ids, each batch one short UPDATE, so no long
transaction holds the journals. A run walks the time index from where the last run got
through (`RetentionRun`), never over the years of rows pruned before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from orders.models import PaymentAttempt, PaymentCheck, ProviderCallback, RetentionRun

log = logging.getLogger(__name__)

BATCH = 1000
# Runs older than this are forgotten (one run a day).
KEEP_RUNS = timedelta(days=400)


@dataclass
class PruneReport:
    callback_cutoff: datetime
    check_cutoff: datetime
    callbacks: int = 0
    checks: int = 0
    complete: bool = True
    dry_run: bool = False
    seconds: float = 0.0
    run: RetentionRun | None = None


def callback_retention() -> timedelta:
    return timedelta(days=settings.RETENTION_CALLBACK_DAYS)


def check_retention() -> timedelta:
    return timedelta(days=settings.RETENTION_CHECK_DAYS)


def last_run() -> RetentionRun | None:
    return RetentionRun.objects.order_by("-started_at", "-id").first()


@dataclass
class _Journal:
    model: type[Model]
    time_field: str
    stamp_field: str
    # Rows that still hold something to prune.
    holding: Q
    cleared: dict
    # Called with each batch's ids and the cutoff, for copies of the payload kept elsewhere.
    also: Callable[[list[int], datetime], None] | None = None


CALLBACKS = _Journal(
    ProviderCallback, "received_at", "body_pruned_at",
    holding=Q(body_pruned_at__isnull=True),
    cleared={"body": "", "headers": {}},
)
def _clear_attempts_last_response(check_ids: list[int], cutoff: datetime) -> None:
    """The attempt keeps a copy of its latest provider answer: it goes with its checks, once
    the attempt has not been checked since the cutoff."""
    PaymentAttempt.objects.filter(
        pk__in=PaymentCheck.objects.filter(pk__in=check_ids).values("attempt_id"),
        last_checked_at__lt=cutoff, last_raw_response__isnull=False,
    ).update(last_raw_response=None)


# error_message is our own sentence about the fault (no provider payload): it stays.
CHECKS = _Journal(
    PaymentCheck, "checked_at", "response_pruned_at",
    holding=Q(response_pruned_at__isnull=True) & ~Q(response_excerpt=""),
    cleared={"response_excerpt": ""},
    also=_clear_attempts_last_response,
)


def _in_range(journal: _Journal, *, since: datetime | None, cutoff: datetime) -> QuerySet:
    rows = journal.model.objects.filter(**{f"{journal.time_field}__lt": cutoff})
    if since is not None:
        rows = rows.filter(**{f"{journal.time_field}__gte": since})
    return rows


def _prune(journal: _Journal, *, since: datetime | None, cutoff: datetime, now: datetime, batch_size: int,
           deadline: float) -> tuple[int, datetime | None, bool]:
    """Prune `journal` between `since` and `cutoff`, oldest first. Returns (rows pruned, the
    moment before which everything is pruned, whether it got to the cutoff in time)."""
    pruned = 0
    position: tuple[datetime, int] | None = None
    through = since
    while True:
        if time.monotonic() > deadline:
            return pruned, through, False
        rows = _in_range(journal, since=position[0] if position else since, cutoff=cutoff)
        if position is not None:
            # Keyset on (time, id): rows sharing the last batch's time are not read twice.
            rows = rows.exclude(**{journal.time_field: position[0], "pk__lte": position[1]})
        page = list(rows.order_by(journal.time_field, "pk").values_list(journal.time_field, "pk")[:batch_size])
        if not page:
            return pruned, cutoff, True
        ids = [pk for _moment, pk in page]
        pruned += journal.model.objects.filter(journal.holding, pk__in=ids).update(
            **journal.cleared, **{journal.stamp_field: now}
        )
        if journal.also is not None:
            journal.also(ids, cutoff)
        position = page[-1]
        through = position[0]


def prune_journals(
    *,
    now: datetime | None = None,
    batch_size: int = BATCH,
    time_budget: float = 600.0,
    dry_run: bool = False,
    from_start: bool = False,
) -> PruneReport:
    """Prune callback bodies and check responses older than their retention periods.

    `dry_run` counts what would be pruned and changes nothing (no run is recorded);
    `from_start` also reads the rows before the last run's position (rows written later with
    an old time)."""
    now = now or timezone.now()
    started = time.monotonic()
    report = PruneReport(callback_cutoff=now - callback_retention(), check_cutoff=now - check_retention(),
                         dry_run=dry_run)
    previous = None if from_start else (
        RetentionRun.objects.filter(started_at__lte=now).order_by("-started_at", "-id").first()
    )
    callbacks_since = previous.callbacks_pruned_through if previous else None
    checks_since = previous.checks_pruned_through if previous else None
    if dry_run:
        report.callbacks = _in_range(CALLBACKS, since=callbacks_since, cutoff=report.callback_cutoff).filter(
            CALLBACKS.holding).count()
        report.checks = _in_range(CHECKS, since=checks_since, cutoff=report.check_cutoff).filter(
            CHECKS.holding).count()
        report.seconds = time.monotonic() - started
        return report

    run = RetentionRun.objects.create(started_at=now, callback_cutoff=report.callback_cutoff,
                                      check_cutoff=report.check_cutoff)
    deadline = started + time_budget
    report.callbacks, callbacks_through, callbacks_done = _prune(
        CALLBACKS, since=callbacks_since, cutoff=report.callback_cutoff, now=now, batch_size=batch_size,
        deadline=deadline,
    )
    report.checks, checks_through, checks_done = _prune(
        CHECKS, since=checks_since, cutoff=report.check_cutoff, now=now, batch_size=batch_size, deadline=deadline,
    )
    report.complete = callbacks_done and checks_done
    # A shorter period later moves the cutoff back: never claim less than was pruned before.
    run.callbacks_pruned_through = _latest(callbacks_through, callbacks_since)
    run.checks_pruned_through = _latest(checks_through, checks_since)
    run.callbacks_pruned, run.checks_pruned = report.callbacks, report.checks
    run.complete = report.complete
    run.finished_at = timezone.now()
    run.save()
    RetentionRun.objects.filter(started_at__lt=now - KEEP_RUNS).delete()
    report.run = run
    report.seconds = time.monotonic() - started
    log.info("retention: %d callback bodies and %d check responses pruned (%s, %.2fs)",
             report.callbacks, report.checks, "complete" if report.complete else "time budget used up",
             report.seconds)
    return report


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
