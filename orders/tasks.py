"""django-q2 tasks: thin wrappers that take ids and call the engine's services."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.tasks import async_task

from orders.actors import Actor
from orders.api.idempotency import purge_expired_keys
from orders.exceptions import DomainError
from orders.models import Order, PaymentCheck
from orders.recheck import check_attempts, recheck_due
from orders.services import confirm_order
from orders.snapshots import take_snapshot_if_due
from orders.states import OrderStatus
from orders.sweep import SWEEP_BATCH, sweep_unreturned


def recheck_due_payments() -> str:
    report = recheck_due()
    return f"claimed={report.claimed} checked={report.checked} errors={report.errors} changed={report.changed}"


def recheck_attempt(attempt_id: int, source: str = PaymentCheck.Source.CALLBACK) -> str:
    report = check_attempts([attempt_id], source=source, actor=Actor.system())
    return f"checked={report.checked} changed={report.changed}"


def sweep_unreturned_orders() -> str:
    """The scheduled sweep. With more than one batch due on PostgreSQL it first asks the other
    task workers to sweep alongside (`SWEEP_WORKERS` in all): SKIP LOCKED hands each worker
    its own batches, so a backlog is cleared in a fraction of the time. (On SQLite one
    process sweeps: row locks do not exist there, and one writer works at a time anyway.)"""
    helpers = _sweep_helpers_needed()
    for n in range(helpers):
        async_task("orders.tasks.sweep_unreturned_part", task_name=f"sweep-part-{n + 1}")
    report = sweep_unreturned()
    take_snapshot_if_due()
    c = report.counts
    return (f"orders={report.orders} flagged={c.flagged} changed={c.changed} unflagged={c.unflagged} "
            f"helpers={helpers}")


def sweep_unreturned_part() -> str:
    """One more worker on a large sweep (see `sweep_unreturned_orders`)."""
    report = sweep_unreturned()
    return f"orders={report.orders}"


def _sweep_helpers_needed() -> int:
    if settings.SWEEP_WORKERS <= 1 or connection.vendor != "postgresql":
        return 0
    batch_size = SWEEP_BATCH
    more_than_a_batch = (
        Order.objects.filter(sweep_due_at__lte=timezone.now()).order_by().values("pk")[batch_size:batch_size + 1].exists()
    )
    return settings.SWEEP_WORKERS - 1 if more_than_a_batch else 0


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


def purge_idempotency_keys() -> str:
    """Forget API idempotency keys older than IDEMPOTENCY_KEY_TTL_HOURS (batched deletes)."""
    return f"deleted={purge_expired_keys()}"
