"""Loading what `orders.diagnosis.diagnose` needs, for many orders at once.

`gather_evidence` reads the evidence of a batch of orders in five queries whatever the
batch size (orders with their merchant's threshold; their attempts; which attempts have a
signed callback; the last few checks of each attempt that may still take money; the
events that explain an order), so the sweep can diagnose tens of thousands of orders
without a query per order.

`detect_outage_providers` is one aggregate query over recent attempts; the sweep runs it
once and hands the result to every `diagnose` call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db.models import Count, F, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from orders.causes import Category, Cause
from orders.diagnosis import (
    NETWORK_ERROR_KINDS,
    NO_MONEY_STATUSES,
    RECENT_CHECKS,
    AttemptEvidence,
    CheckEvidence,
    ConfirmationFailure,
    Diagnosis,
    OrderEvidence,
    diagnose,
)
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.states import ATTEMPT_OPEN, AttemptStatus

# Confirmation failures kept per order; the total is counted separately.
RECENT_FAILURES = 5
MONEY_CAUSE_VALUES = sorted([Cause.DUPLICATE_PAYMENT.value, Cause.AMOUNT_MISMATCH.value])
Kind = OrderEvent.Kind


def _newest_first(*partition: str, time_field: str) -> Window:
    """Numbers rows 1, 2, ... newest first within each partition.

    Window functions run on SQLite and PostgreSQL alike; Django wraps the query so a
    filter on the number applies after the window is computed.
    """
    return Window(
        RowNumber(), partition_by=[F(name) for name in partition], order_by=[F(time_field).desc(), F("id").desc()]
    )


# The order fields the evidence reads; a caller that already loaded the orders with these
# (and their merchants) passes them to `gather_evidence` and saves a query.
EVIDENCE_ORDER_FIELDS = (
    "reference", "status", "status_changed_at", "submitted_at", "amount", "currency", "needs_review",
)


def gather_evidence(order_ids: Sequence[int], *, orders: Sequence[Order] | None = None) -> dict[int, OrderEvidence]:
    """The evidence of every existing order in `order_ids`, keyed by order id.

    At most five queries, however many orders (none for an empty batch, fewer when there
    are no attempts); four when `orders` (those orders, loaded with at least
    `EVIDENCE_ORDER_FIELDS` and their merchant) is given. Ids that do not exist are left
    out. Batches of a few thousand ids keep the `IN` lists well within SQLite's and
    PostgreSQL's parameter limits.
    """
    ids = sorted(set(order_ids))
    if not ids:
        return {}

    if orders is not None:
        order_rows = [
            {"id": o.pk, **{name: getattr(o, name) for name in EVIDENCE_ORDER_FIELDS},
             "merchant__stuck_after": o.merchant.stuck_after}
            for o in orders
        ]
    else:
        order_rows = list(
            Order.objects.filter(pk__in=ids)
            .order_by()
            .values("id", *EVIDENCE_ORDER_FIELDS, "merchant__stuck_after")
        )
    if not order_rows:
        return {}

    attempt_rows = list(
        PaymentAttempt.objects.filter(order_id__in=ids)
        .order_by()
        .values(
            "id",
            "order_id",
            "provider",
            "provider_reference",
            "status",
            "amount",
            "currency",
            "failure_code",
            "action_required",
            "created_at",
            "status_changed_at",
            "check_count",
            "next_check_at",
        )
    )
    attempt_ids = [row["id"] for row in attempt_rows]

    # A separate lookup by attempt id rather than an EXISTS per attempt row: PostgreSQL
    # tends to answer EXISTS by hashing the whole callbacks table, which grows forever.
    called_back: set[int] = set()
    if attempt_ids:
        called_back = set(
            ProviderCallback.objects.filter(attempt_id__in=attempt_ids, signature_valid=True)
            .order_by()
            .values_list("attempt_id", flat=True)
            .distinct()
        )

    # Checks of an attempt that ended without taking money (failed, expired, cancelled)
    # explain nothing the attempt's own status does not; skipping them saves rows.
    checked_ids = [row["id"] for row in attempt_rows if row["status"] not in NO_MONEY_STATUSES]
    checks_by_attempt: dict[int, list[CheckEvidence]] = defaultdict(list)
    if checked_ids:
        # Filtering by the attempt ids we already hold (rather than joining back to the
        # orders) lets PostgreSQL walk the (attempt, -checked_at) index instead of
        # misestimating the join and scanning the whole checks table.
        check_rows = (
            PaymentCheck.objects.filter(attempt_id__in=checked_ids)
            .order_by()
            .annotate(rank=_newest_first("attempt_id", time_field="checked_at"))
            .filter(rank__lte=RECENT_CHECKS)
            .values_list(
                "attempt_id",
                "source",
                "reported_status",
                "reported_amount",
                "reported_currency",
                "error_kind",
                "http_status",
                "checked_at",
            )
        )
        for attempt_id, *fields in check_rows:
            checks_by_attempt[attempt_id].append(CheckEvidence(*fields))

    # The evidence classes put attempts and checks newest first themselves.
    attempts_by_order: dict[int, list[AttemptEvidence]] = defaultdict(list)
    for row in attempt_rows:
        order_id = row.pop("order_id")
        attempts_by_order[order_id].append(
            AttemptEvidence(
                **row, has_callback=row["id"] in called_back, recent_checks=checks_by_attempt.get(row["id"], ())
            )
        )

    # The events that explain an order: confirmation failures (the latest few and how many),
    # access reports (how many), and resolutions of a money cause (the latest).
    event_rows = (
        OrderEvent.objects.filter(order_id__in=ids)
        .filter(
            Q(kind__in=[Kind.CONFIRMATION_FAILED, Kind.ACCESS_REPORTED])
            | Q(kind=Kind.UNFLAGGED, data__cause__in=MONEY_CAUSE_VALUES)
        )
        .order_by()
        .annotate(
            rank=_newest_first("order_id", "kind", time_field="created_at"),
            total=Window(Count("id"), partition_by=[F("order_id"), F("kind")]),
        )
        .filter(rank__lte=RECENT_FAILURES)
        .values("order_id", "kind", "data", "created_at", "rank", "total")
    )
    failures: dict[int, list[ConfirmationFailure]] = defaultdict(list)
    failure_totals: dict[int, int] = {}
    access_totals: dict[int, int] = {}
    money_reviewed: dict[int, datetime] = {}
    for row in event_rows:
        order_id, kind, data = row["order_id"], row["kind"], row["data"] or {}
        if kind == Kind.CONFIRMATION_FAILED:
            failure = ConfirmationFailure(error=str(data.get("error", "")), at=row["created_at"])
            if isinstance(data.get("validation"), dict) and data["validation"]:
                failure["validation"] = {str(k): str(v) for k, v in data["validation"].items()}
            failures[order_id].append(failure)
            failure_totals[order_id] = row["total"]
        elif kind == Kind.ACCESS_REPORTED:
            access_totals[order_id] = row["total"]
        elif row["rank"] == 1:
            money_reviewed[order_id] = row["created_at"]

    result: dict[int, OrderEvidence] = {}
    for row in order_rows:
        order_id = row["id"]
        result[order_id] = OrderEvidence(
            order_id=order_id,
            reference=row["reference"],
            stuck_after=row["merchant__stuck_after"],
            status=row["status"],
            status_changed_at=row["status_changed_at"],
            submitted_at=row["submitted_at"],
            amount=row["amount"],
            currency=row["currency"],
            needs_review=row["needs_review"],
            attempts=attempts_by_order.get(order_id, ()),
            confirmation_failures=tuple(sorted(failures.get(order_id, ()), key=lambda f: f["at"], reverse=True)),
            confirmation_failure_count=failure_totals.get(order_id, 0),
            access_reports=access_totals.get(order_id, 0),
            money_reviewed_at=money_reviewed.get(order_id),
        )
    return result


def diagnose_now(
    order_id: int, *, now: datetime | None = None, outage_providers: frozenset[str] | None = None
) -> tuple[OrderEvidence | None, Diagnosis | None]:
    """One order's evidence and its diagnosis, computed now (the order page, the API, a
    ticket's note): what the sweep would conclude, outage detection included. A caller
    diagnosing many orders in a row passes `outage_providers`, detected once."""
    now = now or timezone.now()
    evidence = gather_evidence([order_id]).get(order_id)
    if evidence is None:
        return None, None
    if outage_providers is None:
        outage_providers = detect_outage_providers(now=now)
    return evidence, diagnose(evidence, now=now, outage_providers=outage_providers)


def diagnosis_facts(diagnosis: Diagnosis | None, attempts: Sequence[PaymentAttempt] = ()) -> dict | None:
    """A diagnosis as the order pages and the API show it: its fields, the cause's and the
    category's labels, and when the open attempt is checked next (from `attempts`)."""
    if diagnosis is None:
        return None
    open_attempt = next((a for a in attempts if a.status in ATTEMPT_OPEN), None)
    return {
        **asdict(diagnosis),
        "cause_label": str(Cause(diagnosis.cause).label),
        "category_label": str(Category(diagnosis.category).label),
        "next_check_at": open_attempt.next_check_at if open_attempt else None,
    }


def detect_outage_providers(
    *,
    now: datetime,
    window: timedelta = timedelta(minutes=10),
    min_attempts: int = 20,
    min_share: float = 0.5,
) -> frozenset[str]:
    """Providers that look down right now, from one aggregate query.

    Among the attempts created in `(now - window, now]`, an attempt is *failing* when it is
    still open and either its status is `unknown` (the provider never said whether money
    moved) or its latest check failed to reach the provider (timeout, connection error,
    any HTTP error: unlike the per-order rule, one query cannot cheaply tell 5xx from 4xx,
    and a provider answering every query with 4xx is broken too).

    A provider is in outage when at least `min_attempts` of its recent attempts are failing
    and they are at least `min_share` of all its recent attempts: the count keeps a quiet
    provider's few timeouts from paging anyone, the share keeps a busy provider's normal
    trickle of errors from looking like an incident.
    """
    latest_error = Subquery(
        PaymentCheck.objects.filter(attempt_id=OuterRef("pk")).order_by("-checked_at", "-id").values("error_kind")[:1]
    )
    failing = Q(status__in=sorted(ATTEMPT_OPEN)) & (
        Q(status=AttemptStatus.UNKNOWN) | Q(latest_error__in=sorted(NETWORK_ERROR_KINDS))
    )
    rows = (
        PaymentAttempt.objects.filter(created_at__gt=now - window, created_at__lte=now)
        .order_by()
        .annotate(latest_error=latest_error)
        .values("provider")
        .annotate(total=Count("id"), failing=Count("id", filter=failing))
        .values_list("provider", "total", "failing")
    )
    # Both thresholds are applied here, not in a HAVING clause: PostgreSQL does not merge the
    # HAVING copy of an aggregate that contains a subquery, and would run the latest-check
    # subquery twice per recent attempt (one row per provider comes back either way).
    return frozenset(
        provider for provider, total, failing_count in rows
        if failing_count >= min_attempts and failing_count >= min_share * total
    )
