"""Scheduled and manual re-checks of payment attempts with their providers.

Due attempts are claimed in batches: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so workers
take disjoint batches, and the claim pushes `next_check_at` forward by a lease, so the
batch of a worker that dies comes due again. (SQLite has one writer at a time; the same
code is safe there because the claim runs in an IMMEDIATE transaction.)

Provider calls run in a thread pool bounded by the policy's calls in flight; every answer
is then journaled and applied on the calling thread, so database work stays on one
connection while network waits overlap.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from orders.actors import Actor
from orders.exceptions import DomainError
from orders.models import PaymentAttempt, PaymentCheck
from orders.policy import PolicyBook
from orders.providers.base import ProviderError, ProviderResult
from orders.providers.registry import get_provider, is_configured
from orders.services import apply_provider_result, record_check
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


@dataclass
class RecheckReport:
    claimed: int = 0
    checked: int = 0
    errors: int = 0
    changed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    items: list[CheckReport] = field(default_factory=list)


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
        with ThreadPoolExecutor(max_workers=min(in_flight, len(group))) as pool:
            futures = {pool.submit(_ask, attempt): attempt for attempt in group}
            for future in as_completed(futures):
                attempt = futures[future]
                report.items.append(
                    _record(attempt, future, source=source, actor=actor, policies=policies, report=report, now=now)
                )
    report.seconds = time.monotonic() - started
    return report


def _record(attempt, future, *, source, actor, policies, report: RecheckReport, now=None) -> CheckReport:
    item = CheckReport(attempt.pk, attempt.provider, attempt.provider_reference or attempt.idempotency_key)
    try:
        result = future.result()
    except ProviderError as exc:
        check = record_check(attempt=attempt.pk, source=source, error=exc, policies=policies, now=now)
        item.check_id, item.error = check.pk, exc.kind
        report.checked += 1
        report.errors += 1
        return item
    except Exception as exc:  # noqa: BLE001 - one broken adapter call must not abort the batch
        # Not a classified provider fault (a bug or a misconfiguration): nothing is recorded,
        # and the claim's lease brings the attempt back later.
        log.exception("re-check of %s failed outside the provider contract", attempt)
        item.error = str(exc)
        return item
    check = record_check(attempt=attempt.pk, source=source, result=result, policies=policies, now=now)
    item.check_id, item.reported_status = check.pk, result.status
    report.checked += 1
    try:
        outcome = apply_provider_result(attempt=attempt.pk, result=result, source=source, actor=actor)
    except DomainError as exc:
        log.warning("re-check of %s could not be applied: %s", attempt, exc.message)
        item.error = exc.message
        return item
    item.changed, item.review_cause = outcome.changed, outcome.review_cause
    report.changed += int(outcome.changed)
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
