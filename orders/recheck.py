"""Scheduled and manual re-checks of payment attempts with their providers.

Due attempts are claimed in batches: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so workers
take disjoint batches, and the claim pushes `next_check_at` forward by a lease, so the
batch of a worker that dies comes due again. (SQLite has one writer at a time; the same
code is safe there because the claim runs in an IMMEDIATE transaction.)

Provider calls run in a thread pool bounded by the policy's calls in flight. Every answer
is then journaled and applied (`services.check_and_apply`: one transaction, its events in
one insert) by `RECHECK_DB_WRITERS` threads, each on its own connection, so that one
thread's statements run in PostgreSQL while another's Python runs; with one writer (the
SQLite default) the calling thread does it on its own connection.
"""

from __future__ import annotations

import logging
import time
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from orders import log_context, telemetry
from orders.actors import Actor
from orders.models import PaymentAttempt, PaymentCheck, ProviderCallback
from orders.policy import PolicyBook
from orders.providers.base import ProviderError, ProviderResult
from orders.providers.registry import get_provider, is_configured
from orders.services import check_and_apply
from orders.states import ATTEMPT_OPEN

log = logging.getLogger(__name__)

# Long enough for a batch to finish its calls; a crashed worker's batch is retried after it.
CLAIM_LEASE = timedelta(minutes=5)


@dataclass
class CheckReport:
    attempt_id: int
    provider: str
    reference: str
    check_id: int | None = None
    error: str = ""
    reported_status: str = ""
    changed: bool = False
    review_cause: str = ""
    checked: bool = False
    provider_error: bool = False
    latency_ms: int | None = None


@dataclass
class RecheckReport:
    claimed: int = 0
    checked: int = 0
    errors: int = 0
    changed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    items: list[CheckReport] = field(default_factory=list)

    def add(self, item: CheckReport) -> None:
        self.items.append(item)
        self.checked += int(item.checked)
        self.errors += int(item.provider_error)
        self.changed += int(item.changed)


@contextmanager
def _writers(count: int) -> Iterator[Callable[[Callable[[], CheckReport]], None]]:
    """Run the submitted jobs on `count` threads with a connection each (closed when they
    finish), or inline when `count` is 1. Yields `submit`; the block's exit waits for every
    job, and the results come back through the jobs themselves."""
    if count <= 1:
        yield lambda job: job()
        return
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        try:
            while (job := jobs.get()) is not None:
                job()
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=work, name=f"recheck-writer-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield jobs.put
    finally:
        for _ in threads:
            jobs.put(None)
        for thread in threads:
            thread.join()


def claim_due_attempts(*, now: datetime | None = None, limit: int = 200, lease: timedelta = CLAIM_LEASE) -> list[int]:
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            PaymentAttempt.objects.select_for_update(skip_locked=True)
            .filter(next_check_at__lte=now)
            .order_by("next_check_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            PaymentAttempt.objects.filter(pk__in=ids).update(next_check_at=now + lease)
    return ids


def _ask(attempt: PaymentAttempt) -> ProviderResult:
    provider = get_provider(attempt.provider)
    if attempt.provider_reference:
        return provider.query(attempt.provider_reference)
    # We never learned the provider's reference (the create call timed out): creating again
    # with the same idempotency key returns the payment if it exists, and settles the doubt.
    return provider.create_payment(
        idempotency_key=attempt.idempotency_key,
        amount=attempt.amount,
        currency=attempt.currency,
        order_reference=attempt.order.reference,
        merchant=attempt.order.merchant.code,
    )


def _ask_bound(attempt: PaymentAttempt) -> ProviderResult:
    # On a pool thread: the adapter's log lines name the order and the provider too.
    with log_context.bound(order_ref=attempt.order.reference, provider=attempt.provider):
        return _ask(attempt)


def check_attempts(
    attempt_ids: list[int], *, source: str, actor: Actor, now: datetime | None = None
) -> RecheckReport:
    """Ask the providers about these attempts, journal every answer, and apply it.

    `now` (default: the time of each answer) stamps the checks and starts the next delay."""
    started = time.monotonic()
    report = RecheckReport(claimed=len(attempt_ids))
    attempts = list(
        PaymentAttempt.objects.filter(pk__in=attempt_ids, status__in=sorted(ATTEMPT_OPEN)).select_related(
            "order__merchant"
        )
    )
    report.skipped = len(attempt_ids) - len(attempts)
    # Which attempts already had a verified callback, for the whole batch in one query (a
    # result taken from a check is "reconciled" only when no callback brought it).
    with_callback = set(
        ProviderCallback.objects.filter(attempt_id__in=[a.pk for a in attempts], signature_valid=True)
        .values_list("attempt_id", flat=True)
        .distinct()
    )
    policies = PolicyBook()
    by_provider: dict[str, list[PaymentAttempt]] = defaultdict(list)
    for attempt in attempts:
        by_provider[attempt.provider].append(attempt)
    for provider_name, group in by_provider.items():
        if not is_configured(provider_name):
            # No adapter: leave the attempt unscheduled rather than spin on it; the sweep
            # still diagnoses the order from the evidence it has.
            PaymentAttempt.objects.filter(pk__in=[a.pk for a in group]).update(next_check_at=None)
            report.skipped += len(group)
            continue
        in_flight = max(policies.for_attempt(provider_name, a.order.merchant_id).max_in_flight for a in group)
        items: list[CheckReport] = []  # list.append is atomic: writer threads add to it

        def job(attempt: PaymentAttempt, future: Future) -> Callable[[], None]:
            return lambda: items.append(_record(attempt, future, source=source, actor=actor, policies=policies,
                                                now=now, has_callback=attempt.pk in with_callback))

        writers = min(settings.RECHECK_DB_WRITERS, len(group))
        with ThreadPoolExecutor(max_workers=min(in_flight, len(group))) as pool, _writers(writers) as submit:
            futures = {pool.submit(_ask_bound, attempt): attempt for attempt in group}
            for future in as_completed(futures):
                submit(job(futures[future], future))
        for item in items:
            report.add(item)
    _count_checks(report.items, source=source)
    report.seconds = time.monotonic() - started
    return report


def _count_checks(items: list[CheckReport], *, source: str) -> None:
    """The batch's journaled checks in the metrics: one statement for the whole batch."""
    telemetry.add_many(telemetry.check_increments(
        (item.provider, source, item.error if item.provider_error else item.reported_status, item.provider_error,
         None if item.latency_ms is None else item.latency_ms / 1000)
        for item in items
        if item.checked
    ))


def _record(attempt, future, *, source, actor, policies, now=None, has_callback=None) -> CheckReport:
    # Every log line about this answer (here and in the services) names the order and the
    # provider; this runs on a writer thread, which has a context of its own.
    with log_context.bound(order_ref=attempt.order.reference, provider=attempt.provider):
        return _record_bound(attempt, future, source=source, actor=actor, policies=policies, now=now,
                             has_callback=has_callback)


def _record_bound(attempt, future, *, source, actor, policies, now, has_callback) -> CheckReport:
    item = CheckReport(attempt.pk, attempt.provider, attempt.provider_reference or attempt.idempotency_key)
    try:
        result, error = future.result(), None
    except ProviderError as exc:
        result, error = None, exc
    except Exception as exc:  # noqa: BLE001 - one broken adapter call must not abort the batch
        # Not a classified provider fault (a bug or a misconfiguration): nothing is recorded,
        # and the claim's lease brings the attempt back later.
        log.exception("re-check of %s failed outside the provider contract", attempt)
        item.error = str(exc)
        return item
    try:
        done = check_and_apply(attempt=attempt, source=source, actor=actor, result=result, error=error,
                               policies=policies, now=now, has_callback=has_callback)
    except Exception:  # noqa: BLE001 - a database fault on one answer must not lose the batch's others
        log.exception("re-check answer for %s could not be journaled; the claim's lease retries it", attempt)
        item.error = "not journaled"
        return item
    item.check_id, item.checked = done.check.pk, True
    item.latency_ms = done.check.latency_ms
    if error is not None:
        item.error, item.provider_error = error.kind, True
        return item
    item.reported_status = result.status
    if done.error is not None:
        log.warning("re-check of %s could not be applied: %s", attempt, done.error.message)
        item.error = done.error.message
        return item
    item.changed, item.review_cause = done.outcome.changed, done.outcome.review_cause
    return item


def recheck_due(*, batch_size: int = 200, time_budget: float = 50.0, now: datetime | None = None) -> RecheckReport:
    """Claim and check due attempts batch after batch until none is due or time is up."""
    started = time.monotonic()
    total = RecheckReport()
    system = Actor.system()
    while time.monotonic() - started < time_budget:
        ids = claim_due_attempts(limit=batch_size, now=now)
        if not ids:
            break
        # The same clock for claiming and rescheduling: with a `now` ahead of the real time
        # the next check (real time + delay) was due again at once, and one run re-checked
        # the same attempts until their schedules were used up and their orders flagged.
        batch = check_attempts(ids, source=PaymentCheck.Source.SCHEDULED, actor=system, now=now)
        for name in ("claimed", "checked", "errors", "changed", "skipped"):
            setattr(total, name, getattr(total, name) + getattr(batch, name))
    total.seconds = time.monotonic() - started
    if total.claimed:
        log.info("re-check: %d claimed, %d checked, %d errors, %d changed (%.2fs)",
                 total.claimed, total.checked, total.errors, total.changed, total.seconds)
    return total


def check_order_now(order_id: int, *, actor: Actor, source: str = PaymentCheck.Source.MANUAL) -> RecheckReport:
    """"Check now": ask the provider about every open attempt of one order, synchronously."""
    ids = list(
        PaymentAttempt.objects.filter(order_id=order_id, status__in=sorted(ATTEMPT_OPEN)).values_list("pk", flat=True)
    )
    return check_attempts(ids, source=source, actor=actor)
