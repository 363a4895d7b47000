"""The unreturned sweep: flags, diagnoses, re-diagnoses and unflags the orders that are due.

Only orders whose `sweep_due_at` has passed are read, through a partial index, so a sweep
with nothing due is one cheap query. Each batch is claimed with `FOR UPDATE SKIP LOCKED`
on PostgreSQL (two sweeps never work on the same orders), its evidence is loaded in a
constant number of queries, and the verdicts are written in bulk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from orders.diagnosis import diagnose_many
from orders.evidence import EVIDENCE_ORDER_FIELDS, detect_outage_providers, gather_evidence
from orders.models import Merchant, Order
from orders.services import DiagnosisCounts, apply_diagnoses

log = logging.getLogger(__name__)

# What `apply_diagnoses` and `gather_evidence` read: loading only these keeps a batch's row
# decoding (timestamps above all) small.
SWEEP_FIELDS = tuple(dict.fromkeys((
    "merchant", "status", "status_changed_at", "stuck_since", "stuck_cause", "stuck_category", "needs_review",
    "resolved_at", "sweep_due_at", *EVIDENCE_ORDER_FIELDS,
)))


@dataclass
class SweepReport:
    orders: int = 0
    batches: int = 0
    outage_providers: frozenset[str] = frozenset()
    counts: DiagnosisCounts = field(default_factory=DiagnosisCounts)
    seconds: float = 0.0


SWEEP_BATCH = 1000


def sweep_unreturned(*, now: datetime | None = None, batch_size: int = SWEEP_BATCH, time_budget: float = 240.0) -> SweepReport:
    now = now or timezone.now()
    started = time.monotonic()
    report = SweepReport()
    outage: frozenset[str] | None = None
    merchants: dict[int, Merchant] = {}  # loaded once per sweep: a handful of rows
    while time.monotonic() - started < time_budget:
        with transaction.atomic():
            # Claiming and loading in one statement; of=("self",) as nothing else is joined.
            orders = list(
                Order.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(sweep_due_at__lte=now)
                .order_by("sweep_due_at")
                .only(*SWEEP_FIELDS)[:batch_size]
            )
            if not orders:
                break
            if outage is None:
                # Only worth its aggregate query when something is due.
                outage = report.outage_providers = detect_outage_providers(now=now)
            missing = {o.merchant_id for o in orders} - merchants.keys()
            if missing:
                merchants.update((m.pk, m) for m in Merchant.objects.filter(pk__in=missing))
            for order in orders:
                order.merchant = merchants[order.merchant_id]
            ids = [o.pk for o in orders]
            evidence = gather_evidence(ids, orders=orders)
            verdicts = diagnose_many(evidence, now=now, outage_providers=outage)
            apply_diagnoses(orders=orders, diagnoses=verdicts, now=now, counts=report.counts)
        report.orders += len(ids)
        report.batches += 1
    report.seconds = time.monotonic() - started
    if report.orders:
        log.info(
            "sweep: %d orders in %d batches (%.2fs): %d flagged, %d changed, %d unflagged; outage: %s",
            report.orders, report.batches, report.seconds, report.counts.flagged, report.counts.changed,
            report.counts.unflagged, ",".join(sorted(report.outage_providers)) or "none",
        )
    return report
