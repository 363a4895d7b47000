"""django-q2 tasks: thin wrappers that take ids and call the engine's services."""

from __future__ import annotations

from django.utils import timezone

from orders.actors import Actor
from orders.exceptions import DomainError
from orders.models import Order, PaymentCheck
from orders.recheck import check_attempts, recheck_due
from orders.services import confirm_order
from orders.snapshots import take_snapshot_if_due
from orders.states import OrderStatus
from orders.sweep import sweep_unreturned


def recheck_due_payments() -> str:
    report = recheck_due()
    return f"claimed={report.claimed} checked={report.checked} errors={report.errors} changed={report.changed}"


def recheck_attempt(attempt_id: int, source: str = PaymentCheck.Source.CALLBACK) -> str:
    report = check_attempts([attempt_id], source=source, actor=Actor.system())
    return f"checked={report.checked} changed={report.changed}"


def sweep_unreturned_orders() -> str:
    report = sweep_unreturned()
    take_snapshot_if_due()
    c = report.counts
    return f"orders={report.orders} flagged={c.flagged} changed={c.changed} unflagged={c.unflagged}"


def confirm_order_task(order_id: int) -> str:
    try:
        order = confirm_order(order=order_id, actor=Actor.system())
    except DomainError as exc:
        # Recorded on the order by the service; retries follow its own schedule.
        return f"not confirmed: {exc.message}"
    return order.status


def retry_confirmations(limit: int = 200) -> str:
    # An order that left "paid" some other way (refund, a person's action) has nothing to retry.
    Order.objects.filter(confirm_retry_at__isnull=False).exclude(status=OrderStatus.PAID).update(confirm_retry_at=None)
    due = list(
        Order.objects.filter(confirm_retry_at__lte=timezone.now(), status=OrderStatus.PAID)
        .order_by("confirm_retry_at")
        .values_list("pk", flat=True)[:limit]
    )
    for order_id in due:
        confirm_order_task(order_id)
    return f"retried={len(due)}"


def check_orders_now(order_ids: list[int], user_id: int | None = None) -> str:
    """A bulk "check now" from the worklist: every open attempt of these orders, as that person."""
    from django.contrib.auth import get_user_model

    from orders.recheck import check_attempts
    from orders.models import PaymentAttempt
    from orders.states import ATTEMPT_OPEN

    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    actor = Actor.staff(user) if user else Actor.system()
    ids = list(
        PaymentAttempt.objects.filter(order_id__in=order_ids, status__in=sorted(ATTEMPT_OPEN)).values_list("pk", flat=True)
    )
    report = check_attempts(ids, source=PaymentCheck.Source.MANUAL, actor=actor)
    return f"checked={report.checked} changed={report.changed}"
