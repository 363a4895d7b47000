"""The merchant's orders as CSV (`orders/export.csv`), streamed.

UTF-8 with a byte order mark, so Excel reads Chinese names correctly; rows are read with
`.iterator()` in chunks and written a few hundred at a time, so memory stays flat for a
merchant with hundreds of thousands of orders. A cell a spreadsheet would run as a formula
(`=`, `+`, `-`, `@`, or a tab or carriage return first) is written with a leading apostrophe.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from backoffice.csv_stream import stream_csv
from orders.labels import choice_labels
from orders.models import Order, PaymentAttempt

# The columns read from the table (no address, no status token, nothing staff-only).
EXPORT_FIELDS = (
    "id", "reference", "status", "amount", "currency", "captured_amount", "submitted_at", "status_changed_at",
    "stuck_since", "stuck_cause", "stuck_category", "needs_review", "customer_name", "customer_email",
    "customer_phone", "receipt_number", "dispatch_number",
)
CHUNK_SIZE = 2000


def header() -> list[str]:
    return [
        _("reference"), _("status"), _("amount"), _("currency"), _("captured amount"), _("submitted"),
        _("status changed"), _("unreturned since"), _("unreturned for (minutes)"), _("cause"), _("category"),
        _("needs review"), _("payment provider"), _("payment attempts"), _("customer name"), _("customer email"),
        _("customer phone"), _("receipt number"), _("dispatch note number"),
    ]


def export_queryset(orders: QuerySet[Order]) -> QuerySet[Order]:
    attempts = PaymentAttempt.objects.only("id", "order_id", "provider", "created_at").order_by("-created_at", "-id")
    return (orders.only(*EXPORT_FIELDS).order_by("-submitted_at", "-id")
            .prefetch_related(Prefetch("attempts", queryset=attempts, to_attr="export_attempts")))


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).isoformat(timespec="seconds") if value else ""


def rows(orders: QuerySet[Order], *, now: datetime | None = None) -> Iterator[list[str]]:
    now = now or timezone.now()
    labels = choice_labels()  # get_FOO_display() would rebuild the lazy labels on every row
    status, cause, category = labels["status"], labels["cause"], labels["category"]
    yes, no = _("yes"), _("no")
    for order in export_queryset(orders).iterator(chunk_size=CHUNK_SIZE):
        attempts = order.export_attempts
        minutes = int((now - order.stuck_since).total_seconds() // 60) if order.stuck_since else ""
        yield (
            order.reference, status.get(order.status, order.status), order.amount, order.currency,
            order.captured_amount, _when(order.submitted_at), _when(order.status_changed_at),
            _when(order.stuck_since), minutes, cause.get(order.stuck_cause, order.stuck_cause),
            category.get(order.stuck_category, order.stuck_category), yes if order.needs_review else no,
            attempts[0].provider if attempts else "", len(attempts), order.customer_name, order.customer_email,
            order.customer_phone, order.receipt_number, order.dispatch_number,
        )


def csv_lines(orders: QuerySet[Order]) -> Iterator[str]:
    return stream_csv(header(), rows(orders))
