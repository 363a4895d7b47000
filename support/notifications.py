"""The outbox of customer notifications.

Order changes and public ticket replies become `Notification` rows; a scheduled task sends
them. Writing a row is cheap and happens where the event is known (the receiver below, after
the order's transaction committed; `support.services.add_message`, inside its transaction);
sending is slow and fallible, so it happens later, with retries, in
`send_due_notifications`.

Exactly once, as far as email allows:

- one row per event: `dedupe_key` is unique ("<kind>:<order id>", "ticket_reply:<message
  id>"), and a second insert of the same key is dropped;
- one sender per row: due rows are claimed with `FOR UPDATE SKIP LOCKED` (PostgreSQL; on
  SQLite the claim's IMMEDIATE transaction serializes claimers), and the claim moves the row
  to "sending" with a lease and counts the attempt;
- the claim is checked again (status "sending" and the claimed attempt number) right before
  the message goes out and when the result is written, so a run that lost its claim (its
  lease ran out and another run took the row) neither sends nor overwrites.

What remains is the window between the mail server accepting a message and the row being
marked sent: a sender that dies there leaves the row "sending", and it is sent again once the
lease runs out. (An email system without transactions cannot close that window.)

Subject and body are rendered when the row is queued, in the recipient's language, so what
the admin shows is what was (or will be) sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import mail
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.dispatch import receiver
from django.template.loader import render_to_string
from django.utils import timezone, translation

from orders.causes import Cause
from orders.models import Order
from orders.schedules import register_schedule
from orders.signals import order_state_changed
from orders.states import OrderStatus
from support.models import MessageVisibility, Notification, NotificationKind, NotificationStatus, TicketMessage

log = logging.getLogger(__name__)

Kind = NotificationKind
Status = NotificationStatus

# A claimed row is the claimer's for this long; a crashed sender's rows come due again after it.
# Renewed before each message, so only one slow message (not a slow batch) can outlast it.
SEND_LEASE = timedelta(minutes=5)
# Wait before the 2nd, 3rd, 4th and 5th try; a failure of the 5th try gives up ("failed").
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=60),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1

# Causes of an unreturned order that only the customer can fix.
CUSTOMER_ACTION_CAUSES = frozenset({Cause.AWAITING_CUSTOMER_ACTION, Cause.INVALID_CUSTOMER_DATA})
# A status change that is news for the customer by itself.
STATUS_KINDS: dict[str, str] = {
    OrderStatus.PAYMENT_FAILED: Kind.PAYMENT_DECLINED,
    OrderStatus.CANCELLED: Kind.ORDER_CANCELLED,
    OrderStatus.EXPIRED: Kind.ORDER_EXPIRED,
}
# Statuses whose arrival emails the customer when the order was unreturned: confirmed after
# a delay, and the ones above. Support's resolution reply does not email them a second time.
STATUSES_THAT_EMAIL = frozenset({OrderStatus.CONFIRMED, *STATUS_KINDS})


# --- queueing -------------------------------------------------------------------------------


def dedupe_key_for(*, order_id: int, kind: str, ticket_message_id: int | None = None) -> str:
    if kind == Kind.TICKET_REPLY:
        return f"{Kind.TICKET_REPLY}:{ticket_message_id}"
    return f"{kind}:{order_id}"


def _language_for(order: Order) -> str:
    # Orders and merchants carry no language yet: every customer gets the site's language.
    return settings.LANGUAGE_CODE


def render_notification(*, kind: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a notification, rendered in `language`."""
    with translation.override(language):
        subject = render_to_string(f"support/email/{kind}_subject.txt", context)
        body = render_to_string(f"support/email/{kind}_body.txt", context)
    # A header cannot hold a line break, and the column holds 200 characters.
    subject = " ".join(subject.split())[:200]
    return subject, body.strip() + "\n"


def queue_notification(
    *,
    order: Order | int,
    kind: str,
    ticket_message: TicketMessage | None = None,
    context: dict | None = None,
) -> Notification | None:
    """Put one customer email into the outbox, or return None when there is nothing to send:
    the event already has its row, or nobody to write to.

    Safe inside a caller's transaction (the insert runs in a savepoint) and when called twice
    for one event, concurrently too (the unique `dedupe_key` decides)."""
    if kind not in Kind.values:
        raise ValueError(f"unknown notification kind {kind!r}")
    if kind == Kind.TICKET_REPLY and ticket_message is None:
        raise ValueError("a ticket reply needs its ticket_message")
    if not isinstance(order, Order):
        order = Order.objects.select_related("merchant").filter(pk=order).first()
        if order is None:
            return None
    recipient = order.customer_email
    if ticket_message is not None:
        recipient = ticket_message.ticket.customer_email or recipient
    if not recipient:
        return None
    key = dedupe_key_for(order_id=order.pk, kind=kind, ticket_message_id=ticket_message and ticket_message.pk)
    if Notification.objects.filter(dedupe_key=key).exists():
        return None  # the usual repeat: skip the rendering

    from orders.status_links import status_url  # written by orders; imported late on purpose

    language = _language_for(order)
    full_context = {
        "order": order,
        "customer_name": order.customer_name,
        "reference": order.reference,
        "merchant_name": order.merchant.name,
        "amount": order.amount,
        "currency": order.currency,
        "status_url": status_url(order),
        "site_url": settings.SITE_URL,
        **(context or {}),
    }
    subject, body = render_notification(kind=kind, language=language, context=full_context)
    try:
        with transaction.atomic():  # a savepoint when the caller has a transaction open
            return Notification.objects.create(
                order=order,
                kind=kind,
                dedupe_key=key,
                ticket_message=ticket_message,
                recipient=recipient,
                language=language,
                subject=subject,
                body=body,
            )
    except IntegrityError:
        if Notification.objects.filter(dedupe_key=key).exists():
            return None  # a concurrent caller queued the same event first
        raise


def queue_ticket_reply(message: TicketMessage) -> Notification | None:
    """Email a public reply of a ticket that has an order to the ticket's customer (or the
    order's). Internal notes, tickets without an order and the customer's own messages are
    not sent. Called by `support.services.add_message` inside its transaction."""
    if message.visibility != MessageVisibility.PUBLIC:
        return None
    ticket = message.ticket
    if ticket.order_id is None:
        return None
    order = ticket.order
    recipient = ticket.customer_email or order.customer_email
    if message.author_user_id is None and message.author_email and message.author_email.lower() == recipient.lower():
        return None  # the customer wrote it: no copy of their own words
    author = message.author_name
    if not author and message.author_user_id:
        author = message.author_user.get_full_name()
    return queue_notification(
        order=order,
        kind=Kind.TICKET_REPLY,
        ticket_message=message,
        context={
            "customer_name": ticket.customer_name or order.customer_name,
            "reply_text": message.body,
            "ticket": ticket,
            "author_name": author,
        },
    )


def kind_for_change(
    *, order: Order | None, old_status: str, new_status: str, was_unreturned: bool, is_unreturned: bool, cause: str
) -> str | None:
    """Which notification, if any, an `order_state_changed` event makes. At most one kind per
    event; a status change that is news wins over a flag.

    - payment_confirmed: the order became confirmed and was unreturned at some point (it was
      flagged right before, or its flag was resolved: `resolved_at` is set). A confirmation
      on time is no news beyond the shop's own receipt.
    - payment_declined / order_cancelled / order_expired: the order entered that status.
    - action_needed: the order is unreturned for a cause only the customer can fix
      (awaiting_customer_action, invalid_customer_data).
    """
    if new_status != old_status:
        if new_status == OrderStatus.CONFIRMED:
            if was_unreturned or (order is not None and order.resolved_at is not None):
                return Kind.PAYMENT_CONFIRMED
            return None
        if new_status in STATUS_KINDS:
            return STATUS_KINDS[new_status]
    if is_unreturned and cause in CUSTOMER_ACTION_CAUSES:
        return Kind.ACTION_NEEDED
    return None


@receiver(order_state_changed, dispatch_uid="support.notifications")
def queue_for_order_change(
    sender, *, order_id: int, old_status: str, new_status: str, was_unreturned: bool, is_unreturned: bool,
    cause: str, **kwargs,
) -> None:
    """Queue the customer's email for an order change (runs after the change committed)."""
    # Status changes only, decided from the signal alone. A change of the flag alone comes
    # from the sweep by the thousand in one batch: "action needed" is queued by the periodic
    # `queue_action_needed_notifications` instead, in one query per pass.
    if new_status == old_status or not (new_status == OrderStatus.CONFIRMED or new_status in STATUS_KINDS):
        return
    try:
        order = Order.objects.select_related("merchant").filter(pk=order_id).first()
        if order is None:
            return
        kind = kind_for_change(
            order=order, old_status=old_status, new_status=new_status, was_unreturned=was_unreturned,
            is_unreturned=is_unreturned, cause=cause,
        )
        if kind is not None:
            queue_notification(order=order, kind=kind, context={"cause": cause})
    except Exception:  # noqa: BLE001
        # The order's change is committed; failing its caller now (a webhook, a task, a staff
        # action) would report an error for a change that happened. The email is lost: log it.
        log.exception("could not queue the customer notification for order %s (%s -> %s)",
                      order_id, old_status, new_status)


# --- sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    pk: int
    attempt: int  # the attempt number this claim owns (the row's `attempts` after claiming)


def claim_due_rows(
    model, *, now: datetime | None = None, limit: int = 100, lease: timedelta = SEND_LEASE, stopped_message: str
) -> list[Claim]:
    """Take up to `limit` due rows of an outbox `model` (status pending/sending/sent/failed,
    `attempts`, `next_attempt_at`, `last_error`): pending ones, and sending ones whose lease
    lapsed, become "sending" with the attempt counted and are due again after the lease.
    Commits before it returns, so no lock is held while the message goes out. A row whose
    last try was interrupted is failed with `stopped_message` instead (it may have gone out)."""
    now = now or timezone.now()
    claims: list[Claim] = []
    with transaction.atomic():
        rows = list(
            model.objects.select_for_update(skip_locked=True)
            .filter(status__in=[Status.PENDING, Status.SENDING], next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "status", "attempts")[:limit]
        )
        exhausted = [pk for pk, status, attempts in rows if status == Status.SENDING and attempts >= MAX_ATTEMPTS]
        if exhausted:
            model.objects.filter(pk__in=exhausted).update(
                status=Status.FAILED, next_attempt_at=None, last_error=stopped_message,
            )
        for pk, status, attempts in rows:
            if pk in exhausted:
                continue
            claims.append(Claim(pk, attempts + 1))
        # One UPDATE per distinct attempt number (a handful), not one per row.
        by_attempt: dict[int, list[int]] = {}
        for claim in claims:
            by_attempt.setdefault(claim.attempt, []).append(claim.pk)
        for attempt, pks in by_attempt.items():
            model.objects.filter(pk__in=pks).update(status=Status.SENDING, attempts=attempt, next_attempt_at=now + lease)
    return claims


def still_ours(model, claim: Claim):
    """The claimed row, only while this claim still owns it (a lapsed lease hands it on)."""
    return model.objects.filter(pk=claim.pk, status=Status.SENDING, attempts=claim.attempt)


def claim_due_notifications(
    *, now: datetime | None = None, limit: int = 100, lease: timedelta = SEND_LEASE
) -> list[Claim]:
    """Due customer emails for this sender (`claim_due_rows`)."""
    return claim_due_rows(
        Notification, now=now, limit=limit, lease=lease,
        stopped_message="The sender stopped during the last attempt; the email may not have been sent.",
    )


def _still_ours(claim: Claim):
    return still_ours(Notification, claim)


def retry_delay(attempt: int) -> timedelta | None:
    """The wait after failed try number `attempt`; None when it was the last one."""
    if attempt >= MAX_ATTEMPTS:
        return None
    return RETRY_DELAYS[max(attempt, 1) - 1]


def send_claimed(claim: Claim, *, now: datetime | None = None, connection=None) -> str:
    """Send one claimed row: "sent", "failed" (retry later or given up) or "lost" (no longer
    ours: another sender took it after our lease ran out, or it was already sent)."""
    current = now or timezone.now()
    # Renew the lease and check the claim in one statement, right before sending.
    if not _still_ours(claim).update(next_attempt_at=current + SEND_LEASE):
        return "lost"
    notification = Notification.objects.get(pk=claim.pk)
    message = mail.EmailMessage(
        subject=notification.subject,
        body=notification.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.recipient],
        connection=connection,
        headers={"Auto-Submitted": "auto-generated", "X-Notification-Key": notification.dedupe_key},
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the mail system is retried
        delay = retry_delay(claim.attempt)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if delay is None:
            _still_ours(claim).update(status=Status.FAILED, next_attempt_at=None, last_error=error)
        else:
            _still_ours(claim).update(status=Status.PENDING, next_attempt_at=current + delay, last_error=error)
        log.warning("notification %s (try %s) not sent: %s", claim.pk, claim.attempt, error)
        return "failed"
    done = _still_ours(claim).update(status=Status.SENT, sent_at=now or timezone.now(), next_attempt_at=None,
                                     last_error="")
    return "sent" if done else "lost"


def send_due_notifications(*, now: datetime | None = None, batch_size: int = 100, time_budget: float = 50.0) -> int:
    """Send the due rows, batch after batch, until none is due or `time_budget` seconds have
    passed. Returns how many were sent. Safe to run concurrently and to run again."""
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < time_budget:
        claims = claim_due_notifications(now=now, limit=batch_size)
        if not claims:
            break
        connection = mail.get_connection()
        try:
            connection.open()  # one SMTP session per batch
        except Exception:  # noqa: BLE001 - each message then fails, and is retried, on its own
            log.warning("could not open the mail connection", exc_info=True)
        try:
            for claim in claims:
                sent += send_claimed(claim, now=now, connection=connection) == "sent"
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                log.warning("could not close the mail connection", exc_info=True)
    return sent


def retry_notifications(*, notification_ids: list[int], now: datetime | None = None) -> int:
    """"Retry now": failed or waiting rows become due at once (rows being sent or sent are
    left alone). A failed row gets one more try; its attempts keep counting."""
    now = now or timezone.now()
    return Notification.objects.filter(pk__in=notification_ids, status__in=[Status.FAILED, Status.PENDING]).update(
        status=Status.PENDING, next_attempt_at=now
    )


# --- tasks ----------------------------------------------------------------------------------


def queue_action_needed_notifications(*, limit: int = 500) -> int:
    """Queue "action needed" for orders unreturned for a cause only the customer can fix that
    have not had that email yet (one per order, ever: the dedupe key)."""
    already = Notification.objects.filter(order=OuterRef("pk"), kind=Kind.ACTION_NEEDED)
    orders = (
        Order.objects.filter(stuck_since__isnull=False, stuck_cause__in=sorted(CUSTOMER_ACTION_CAUSES))
        .exclude(customer_email="")
        .filter(~Exists(already))
        .select_related("merchant")
        .order_by("stuck_since")[:limit]
    )
    return sum(
        1 for order in orders
        if queue_notification(order=order, kind=Kind.ACTION_NEEDED, context={"cause": order.stuck_cause}) is not None
    )


def send_due_notifications_task() -> str:
    """django-q2 task (every minute): queue what the periodic pass finds, then send."""
    queued = queue_action_needed_notifications()
    return f"queued={queued} sent={send_due_notifications()}"


register_schedule(name="send-notifications", func="support.notifications.send_due_notifications_task", minutes=1)
