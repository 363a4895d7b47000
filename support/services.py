"""The single write path for tickets and their messages.

Every change of a ticket happens here: the row is locked, the change is checked, only the
changed fields are saved and one `TicketEvent` records who did it. Admin actions, API
views, the customer status page, tasks and commands all call these functions.

Tickets follow their orders: `ticket_for_stuck_order` opens (or reopens) the ticket of an
unreturned order, `resolve_order_ticket` resolves it when the order is sorted, and
`escalate_overdue_tickets` raises the tickets whose SLA passed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count, DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from orders.actors import Actor
from orders.causes import Cause
from orders.evidence import detect_outage_providers
from orders.exceptions import DomainError, IllegalTransition, ValidationFailed
from orders.models import Merchant, Order
from orders.states import OrderStatus
from support import sla
from support.selectors import AGENT_GROUP, lead_emails
from support.models import (
    OTHER_CATEGORY,
    PRIORITY_ORDER,
    TICKET_CATEGORY_CHOICES,
    TICKET_DONE_STATUSES,
    TICKET_OPEN_STATUSES,
    MessageVisibility,
    Ticket,
    TicketEvent,
    TicketEventKind,
    TicketMessage,
    TicketPriority,
    TicketSource,
    TicketStatus,
)

log = logging.getLogger(__name__)

Status = TicketStatus
EventKind = TicketEventKind

MAX_MESSAGE_LENGTH = 20000
MAX_REPORT_LENGTH = 4000
_OPEN = sorted(TICKET_OPEN_STATUSES)

# Which status may follow which. Done tickets only come back by reopening (to an open status).
TICKET_TRANSITIONS: dict[str, frozenset[str]] = {
    Status.NEW: frozenset({Status.OPEN, Status.WAITING_ON_CUSTOMER, Status.WAITING_ON_MERCHANT, Status.ESCALATED,
                           Status.RESOLVED, Status.CLOSED}),
    Status.OPEN: frozenset({Status.WAITING_ON_CUSTOMER, Status.WAITING_ON_MERCHANT, Status.ESCALATED,
                            Status.RESOLVED, Status.CLOSED}),
    Status.WAITING_ON_CUSTOMER: frozenset({Status.OPEN, Status.WAITING_ON_MERCHANT, Status.ESCALATED,
                                           Status.RESOLVED, Status.CLOSED}),
    Status.WAITING_ON_MERCHANT: frozenset({Status.OPEN, Status.WAITING_ON_CUSTOMER, Status.ESCALATED,
                                           Status.RESOLVED, Status.CLOSED}),
    Status.ESCALATED: frozenset({Status.OPEN, Status.WAITING_ON_CUSTOMER, Status.WAITING_ON_MERCHANT,
                                 Status.RESOLVED, Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset({Status.OPEN}),
}


class TicketAlreadyOpen(DomainError):
    """The order already has an open ticket (`.ticket`); work on that one."""

    code = "ticket_already_open"

    def __init__(self, message: str, *, ticket: Ticket) -> None:
        super().__init__(message)
        self.ticket = ticket
        self.existing_id = ticket.pk  # the API answers 409 with it, like a duplicate reference


class _NotReopened(Exception):
    """The resolved ticket was closed by a person while automation meant to reopen it."""


def _already_open(ticket: Ticket) -> TicketAlreadyOpen:
    return TicketAlreadyOpen(
        _("Order %(order)s already has an open ticket: #%(ticket)s.") % {"order": ticket.order, "ticket": ticket.pk},
        ticket=ticket,
    )


# --- helpers ---------------------------------------------------------------------------------


def _record(ticket: Ticket, *, kind: str, actor: Actor, from_value: str = "", to_value: str = "",
            message: str = "", now: datetime | None = None) -> TicketEvent:
    return TicketEvent.objects.create(
        ticket=ticket, kind=kind, actor_kind=actor.kind, actor_user_id=actor.user_id,
        from_value=str(from_value)[:150], to_value=str(to_value)[:150], message=message,
        created_at=now or timezone.now(),
    )


def _ticket_id(ticket: Ticket | int) -> int:
    return ticket if isinstance(ticket, int) else ticket.pk


def _lock_ticket(ticket: Ticket | int) -> Ticket:
    try:
        return Ticket.objects.select_for_update(of=("self",)).select_related("order").get(pk=_ticket_id(ticket))
    except Ticket.DoesNotExist:
        raise ValidationFailed(_("Ticket #%(ticket)s does not exist.") % {"ticket": _ticket_id(ticket)}) from None


def _load_order(order: Order | int) -> Order:
    order_id = order if isinstance(order, int) else order.pk
    try:
        return Order.objects.select_related("merchant", "assignee").get(pk=order_id)
    except Order.DoesNotExist:
        raise ValidationFailed(_("Order %(order)s does not exist.") % {"order": order_id}) from None


def _open_ticket_of(order_id: int, *, exclude: int | None = None) -> Ticket | None:
    qs = Ticket.objects.filter(order_id=order_id, status__in=_OPEN)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    return qs.first()


def _save(ticket: Ticket, fields: list[str]) -> None:
    fields = list(dict.fromkeys(fields))
    if not fields:
        return
    if ticket.order_id and "status" in fields:
        # The constraint ticket_one_open_per_order is the last guard against a racing
        # writer; the savepoint keeps the caller's transaction usable when it fires.
        try:
            with transaction.atomic():
                ticket.save(update_fields=[*fields, "updated_at"])
        except IntegrityError:
            other = _open_ticket_of(ticket.order_id, exclude=ticket.pk)
            if other is None:
                raise
            raise _already_open(other) from None
    else:
        ticket.save(update_fields=[*fields, "updated_at"])


def _status_label(status: str) -> str:
    return str(TicketStatus(status).label)


def _move_locked(ticket: Ticket, *, to: str, actor: Actor, reason: str = "", now: datetime) -> list[str]:
    """Apply a checked status change to a locked ticket and record it; returns the fields to
    save (the caller saves them together with its own)."""
    current = ticket.status
    if to not in TicketStatus.values:
        raise ValidationFailed(_("“%(status)s” is not a ticket status.") % {"status": to})
    if to == current:
        return []
    if to not in TICKET_TRANSITIONS[current]:
        raise IllegalTransition(
            _("Ticket #%(ticket)s is %(current)s and cannot become %(target)s.")
            % {"ticket": ticket.pk, "current": _status_label(current), "target": _status_label(to)}
        )
    reopening = current in TICKET_DONE_STATUSES and to in TICKET_OPEN_STATUSES
    if reopening and ticket.order_id:
        other = _open_ticket_of(ticket.order_id, exclude=ticket.pk)
        if other is not None:
            raise _already_open(other)
    fields = ["status"]
    if current == Status.WAITING_ON_CUSTOMER:
        fields += sla.resume(ticket, now=now)
    if to == Status.WAITING_ON_CUSTOMER:
        fields += sla.pause(ticket, now=now)
    if to == Status.RESOLVED or (to == Status.CLOSED and ticket.resolved_at is None):
        # Closed without a resolution still ends the work now (automation reads resolved_at
        # to leave alone orders a person has decided about).
        ticket.resolved_at = now
        fields.append("resolved_at")
    if to == Status.ESCALATED:
        # By hand too: the automatic escalation then waits for the next breach.
        ticket.escalated_at = now
        fields.append("escalated_at")
    if reopening:
        ticket.reopened_count += 1
        ticket.resolved_at = None
        # A reopened ticket gets a fresh resolution target, not one that passed long ago.
        ticket.resolution_due_at = now + sla.targets_for(ticket.merchant_id, ticket.priority).resolution
        fields += ["reopened_count", "resolved_at", "resolution_due_at"]
    ticket.status = to
    _record(ticket, kind=EventKind.REOPENED if reopening else EventKind.STATUS_CHANGED, actor=actor,
            from_value=current, to_value=to, message=reason, now=now)
    return fields


# --- tickets ---------------------------------------------------------------------------------


def _check_choice(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ValidationFailed(_("“%(value)s” is not a valid %(what)s.") % {"value": value, "what": what})


def _check_visibility(visibility: str, actor: Actor) -> None:
    """Customers write public messages only; merchant users never write internal notes."""
    _check_choice(visibility, MessageVisibility.values, _("message visibility"))
    if actor.kind == "customer" and visibility != MessageVisibility.PUBLIC:
        raise ValidationFailed(_("Customers cannot write internal notes."))
    if actor.kind == "merchant" and visibility == MessageVisibility.INTERNAL:
        raise ValidationFailed(_("Merchant users write public replies or merchant notes, not internal notes."))


def open_ticket(
    *,
    subject: str,
    source: str,
    actor: Actor,
    merchant: Merchant | None = None,
    order: Order | int | None = None,
    category: str = OTHER_CATEGORY,
    priority: str = TicketPriority.NORMAL,
    body: str = "",
    visibility: str = MessageVisibility.INTERNAL,
    customer_name: str = "",
    customer_email: str = "",
    assignee=None,
) -> Ticket:
    """Open a ticket, for an order or for a merchant alone.

    The first message (`body`) describes the ticket and leaves it `new` for someone to pick
    up; a public one from staff is emailed to the customer like any reply. An order with an
    open ticket raises TicketAlreadyOpen.
    """
    subject = (subject or "").strip()
    if not subject:
        raise ValidationFailed(_("A ticket needs a subject."))
    if len(subject) > Ticket._meta.get_field("subject").max_length:
        subject = subject[: Ticket._meta.get_field("subject").max_length - 1] + "…"
    _check_choice(source, TicketSource.values, _("ticket source"))
    _check_choice(category, {value for value, _label in TICKET_CATEGORY_CHOICES}, _("ticket category"))
    _check_choice(priority, TicketPriority.values, _("ticket priority"))
    _check_visibility(visibility, actor)
    body = (body or "").strip()
    loaded = _load_order(order) if order is not None else None
    if loaded is not None:
        if merchant is not None and merchant.pk != loaded.merchant_id:
            raise ValidationFailed(_("Order %(order)s belongs to another merchant.") % {"order": loaded})
        merchant = loaded.merchant
        customer_name = customer_name or loaded.customer_name
        customer_email = customer_email or loaded.customer_email
    if merchant is None:
        raise ValidationFailed(_("A ticket needs a merchant or an order."))
    now = timezone.now()
    first_due, resolution_due = sla.due_times(merchant=merchant, priority=priority, start=now)
    with transaction.atomic():
        if loaded is not None and (existing := _open_ticket_of(loaded.pk)) is not None:
            raise _already_open(existing)
        try:
            with transaction.atomic():
                ticket = Ticket.objects.create(
                    merchant=merchant, order=loaded, subject=subject, category=category, priority=priority,
                    source=source, status=Status.NEW, assignee=assignee, customer_name=customer_name[:200],
                    customer_email=customer_email, created_at=now, first_response_due_at=first_due,
                    resolution_due_at=resolution_due,
                )
        except IntegrityError:
            existing = _open_ticket_of(loaded.pk) if loaded is not None else None
            if existing is None:
                raise
            raise _already_open(existing) from None
        _record(ticket, kind=EventKind.CREATED, actor=actor, to_value=Status.NEW, message=subject, now=now)
        if assignee is not None:
            _record(ticket, kind=EventKind.ASSIGNEE_CHANGED, actor=actor, to_value=assignee.get_username(), now=now)
        if body:
            _append_message(ticket, body=body, visibility=visibility, actor=actor,
                            author_name=customer_name if actor.kind == "customer" else "", now=now, opening=True)
    return ticket


def _append_message(ticket: Ticket, *, body: str, visibility: str, actor: Actor, author_email: str = "",
                    author_name: str = "", now: datetime, opening: bool = False, email: bool = True) -> TicketMessage:
    """Add a message to a ticket locked (or just created) by the caller, with its effects.
    `email=False` keeps a public reply from being emailed (the customer already has the news)."""
    if actor.kind == "customer":
        author_email = author_email or actor.label or ticket.customer_email
        author_name = author_name or ticket.customer_name
    message = TicketMessage.objects.create(
        ticket=ticket, author_user=actor.user, author_email=author_email, author_name=author_name[:200],
        visibility=visibility, body=body, created_at=now,
    )
    fields: list[str] = []
    if actor.kind == "customer":
        if not opening and ticket.status in (Status.WAITING_ON_CUSTOMER, *TICKET_DONE_STATUSES):
            fields += _move_locked(ticket, to=Status.OPEN, actor=actor,
                                   reason=_("The customer wrote."), now=now)
    else:
        if not opening and ticket.status == Status.NEW and actor.kind in ("staff", "merchant"):
            fields += _move_locked(ticket, to=Status.OPEN, actor=actor, now=now)
        elif not opening and ticket.status == Status.WAITING_ON_MERCHANT and actor.kind == "merchant":
            fields += _move_locked(ticket, to=Status.OPEN, actor=actor, reason=_("The merchant wrote."), now=now)
        if visibility == MessageVisibility.PUBLIC:
            if ticket.first_responded_at is None:
                ticket.first_responded_at = now
                fields.append("first_responded_at")
            if email:
                from support.notifications import queue_ticket_reply

                queue_ticket_reply(message)
    _save(ticket, fields)
    return message


def add_message(
    *,
    ticket: Ticket | int,
    body: str,
    visibility: str,
    actor: Actor,
    author_email: str = "",
    author_name: str = "",
) -> TicketMessage:
    """Add a public reply or an internal note (customers write public messages).

    A public reply from us is queued for the customer in the same transaction; a customer's
    message brings a ticket waiting on them, or already done, back to open."""
    body = (body or "").strip()
    if not body:
        raise ValidationFailed(_("A message cannot be empty."))
    if len(body) > MAX_MESSAGE_LENGTH:
        raise ValidationFailed(_("A message is at most %(limit)s characters.") % {"limit": f"{MAX_MESSAGE_LENGTH:,}"})
    _check_visibility(visibility, actor)
    with transaction.atomic():
        locked = _lock_ticket(ticket)
        return _append_message(locked, body=body, visibility=visibility, actor=actor, author_email=author_email,
                               author_name=author_name, now=timezone.now())


def change_status(*, ticket: Ticket | int, to: str, actor: Actor, reason: str = "") -> Ticket:
    """Move a ticket to `to`, or raise and change nothing. Waiting on the customer pauses
    the SLA clock; reopening a done ticket fails if its order has another open one."""
    with transaction.atomic():
        locked = _lock_ticket(ticket)
        _save(locked, _move_locked(locked, to=to, actor=actor, reason=(reason or "").strip(), now=timezone.now()))
    return locked


def change_priority(*, ticket: Ticket | int, to: str, actor: Actor, reason: str = "") -> Ticket:
    """Set the priority; the SLA due times move by the difference of the two targets."""
    _check_choice(to, TicketPriority.values, _("ticket priority"))
    with transaction.atomic():
        locked = _lock_ticket(ticket)
        current = locked.priority
        if current == to:
            return locked
        fields = ["priority", *sla.retarget(locked, old_priority=current, new_priority=to)]
        locked.priority = to
        _save(locked, fields)
        _record(locked, kind=EventKind.PRIORITY_CHANGED, actor=actor, from_value=current, to_value=to,
                message=(reason or "").strip())
    return locked


def assign_ticket(*, ticket: Ticket | int, assignee, actor: Actor) -> Ticket:
    """Give the ticket to `assignee` (None: unassign)."""
    if assignee is not None and not assignee.is_active:
        raise ValidationFailed(_("%(user)s is not active and cannot take tickets.") % {"user": assignee.get_username()})
    with transaction.atomic():
        locked = _lock_ticket(ticket)
        new_id = getattr(assignee, "pk", None)
        if locked.assignee_id == new_id:
            return locked
        previous = get_user_model().objects.filter(pk=locked.assignee_id).first() if locked.assignee_id else None
        locked.assignee = assignee
        _save(locked, ["assignee"])
        _record(locked, kind=EventKind.ASSIGNEE_CHANGED, actor=actor,
                from_value=previous.get_username() if previous else "",
                to_value=assignee.get_username() if assignee else "")
    return locked


# --- the customer's report -------------------------------------------------------------------------


def report_problem(*, order: Order | int, name: str, email: str, message: str) -> Ticket:
    """A customer reports a problem from the order's status page: the message goes to the
    order's open ticket, reopens its latest resolved one, or opens a new one."""
    loaded = _load_order(order)
    email = (email or "").strip()
    name = (name or "").strip()[:200]
    message = (message or "").strip()
    if not email or email.casefold() != (loaded.customer_email or "").strip().casefold():
        raise ValidationFailed(_("Enter the email address you used for this order."))
    if not message:
        raise ValidationFailed(_("Tell us what went wrong."))
    if len(message) > MAX_REPORT_LENGTH:
        raise ValidationFailed(_("Please keep your message under %(limit)s characters.")
                               % {"limit": f"{MAX_REPORT_LENGTH:,}"})
    actor = Actor.customer(email)
    for _attempt in range(2):  # a ticket opened meanwhile takes the message on the second round
        target = _open_ticket_of(loaded.pk)
        if target is None:
            latest = Ticket.objects.filter(order=loaded).order_by("-created_at", "-id").first()
            if latest is not None and latest.status == Status.RESOLVED:
                target = latest
        if target is not None:
            add_message(ticket=target.pk, body=message, visibility=MessageVisibility.PUBLIC, actor=actor,
                        author_email=email, author_name=name)
            return Ticket.objects.get(pk=target.pk)
        try:
            return open_ticket(
                subject=_("Problem reported with order %(reference)s") % {"reference": loaded.reference},
                source=TicketSource.CUSTOMER, actor=actor, order=loaded,
                category=loaded.stuck_cause or OTHER_CATEGORY, body=message, visibility=MessageVisibility.PUBLIC,
                customer_name=name or loaded.customer_name, customer_email=email,
            )
        except TicketAlreadyOpen:
            continue
    raise ValidationFailed(_("We could not record your message; please try again."))


# --- automation ---------------------------------------------------------------------------------


def _least_busy_agent():
    return (
        get_user_model().objects.filter(groups__name=AGENT_GROUP, is_active=True)
        .annotate(open_tickets=Count("assigned_tickets", filter=Q(assigned_tickets__status__in=_OPEN)))
        .order_by("open_tickets", "pk")
        .first()
    )


def _diagnosis_note(order: Order, *, outage_providers: frozenset[str] | None = None) -> str:
    from orders.diagnosis import RECOMMENDED_ACTION
    from orders.evidence import diagnose_now

    evidence, verdict = diagnose_now(order.pk, outage_providers=outage_providers)
    if verdict is None:
        # Not diagnosable right now (too young, or already moving on): the stored cause's advice.
        lines = [_("Order %(reference)s is unreturned (%(cause)s); no fresh diagnosis is available right now.")
                 % {"reference": order.reference, "cause": _cause_label(order.stuck_cause)}]
        if order.stuck_cause in RECOMMENDED_ACTION:
            lines.append(_("Recommended action: %(action)s") % {"action": _(RECOMMENDED_ACTION[order.stuck_cause])})
    else:
        lines = [
            verdict.summary,
            "",
            _("Recommended action: %(action)s") % {"action": verdict.recommended_action},
            _("Done automatically: %(automatic)s") % {"automatic": verdict.automatic},
        ]
    if evidence is not None and evidence.attempts:
        lines += ["", _("Payment attempts:")]
        lines += [_attempt_line(attempt) for attempt in evidence.attempts]
    return "\n".join(lines)


def _attempt_line(attempt) -> str:
    """One attempt of the evidence in plain words (the raw facts are on the order page)."""
    from django.utils.formats import date_format

    from orders.states import AttemptStatus

    last = attempt.recent_checks[0] if attempt.recent_checks else None
    if last is None:
        last_check = _("never checked")
    else:
        outcome = (last.reported_status or "-") if last.answered else (
            f"{last.error_kind} {last.http_status}" if last.http_status else last.error_kind)
        last_check = _("last check %(outcome)s at %(time)s") % {
            "outcome": outcome, "time": date_format(timezone.localtime(last.checked_at), "SHORT_DATETIME_FORMAT")}
    status = AttemptStatus(attempt.status).label if attempt.status in AttemptStatus.values else attempt.status
    checks = ngettext("%(count)s check", "%(count)s checks", attempt.check_count) % {"count": attempt.check_count}
    return _("- #%(id)s at %(provider)s: %(status)s, %(amount)s %(currency)s, %(checks)s, %(last)s%(callback)s") % {
        "id": attempt.id, "provider": attempt.provider, "status": status, "amount": attempt.amount,
        "currency": attempt.currency, "checks": checks, "last": last_check,
        "callback": _(", callback received") if attempt.has_callback else "",
    }


def _cause_label(cause: str) -> str:
    return str(Cause(cause).label) if cause in Cause.values else _("other")


def ticket_subject(order: Order) -> str:
    """The subject a ticket about `order` starts with: its reference, and its cause if flagged."""
    if order.stuck_cause in Cause.values:
        return _("Order %(reference)s unreturned: %(cause)s") % {
            "reference": order.reference, "cause": _cause_label(order.stuck_cause)}
    return _("Order %(reference)s") % {"reference": order.reference}


def ticket_for_stuck_order(
    *, order: Order | int, actor: Actor, outage_providers: frozenset[str] | None = None
) -> Ticket:
    """The ticket of an unreturned order: its open one, else its latest resolved one
    reopened, else a new one with the diagnosis as an internal note. Idempotent."""
    from orders.diagnosis import MONEY_CAUSES

    loaded = _load_order(order)
    if (existing := _open_ticket_of(loaded.pk)) is not None:
        return existing
    latest = Ticket.objects.filter(order=loaded).order_by("-created_at", "-id").first()
    if latest is not None and latest.status == Status.RESOLVED:
        try:
            with transaction.atomic():
                locked = _lock_ticket(latest)
                if locked.status != Status.RESOLVED:
                    # Someone moved it meanwhile: an open ticket is the one; a closed one stays closed.
                    if locked.is_open:
                        return locked
                    raise _NotReopened
                now = timezone.now()
                fields = _move_locked(locked, to=Status.OPEN, actor=actor,
                                      reason=_("The order is unreturned again."), now=now)
                _save(locked, fields)
                _append_message(locked, body=_diagnosis_note(loaded, outage_providers=outage_providers),
                                visibility=MessageVisibility.INTERNAL,
                                actor=actor, now=now)
            return locked
        except TicketAlreadyOpen as exc:
            return exc.ticket
        except _NotReopened:
            pass
    cause = loaded.stuck_cause
    money = cause in MONEY_CAUSES
    assignee = loaded.assignee if loaded.assignee_id and loaded.assignee.is_active else _least_busy_agent()
    try:
        return open_ticket(
            subject=ticket_subject(loaded),
            source=TicketSource.AUTO, actor=actor, order=loaded, category=cause or OTHER_CATEGORY,
            priority=TicketPriority.HIGH if (loaded.needs_review or money) else TicketPriority.NORMAL,
            body=_diagnosis_note(loaded, outage_providers=outage_providers),
                                visibility=MessageVisibility.INTERNAL, assignee=assignee,
        )
    except TicketAlreadyOpen as exc:
        return exc.ticket


def resolve_order_ticket(*, order_id: int, actor: Actor) -> Ticket | None:
    """The order is no longer unreturned: tell the customer in plain words and resolve its
    open ticket. Nothing happens if there is none, or if the order is unreturned again."""
    order = Order.objects.filter(pk=order_id).only("pk", "reference", "status", "stuck_since").first()
    if order is None or order.stuck_since is not None:
        return None
    with transaction.atomic():
        ticket_id = Ticket.objects.filter(order_id=order_id, status__in=_OPEN).values_list("pk", flat=True).first()
        if ticket_id is None:
            return None
        locked = _lock_ticket(ticket_id)
        if not locked.is_open:
            return None
        now = timezone.now()
        text = _("Your order %(reference)s is now %(status)s.") % {
            "reference": order.reference, "status": OrderStatus(order.status).label}
        from support.notifications import STATUSES_THAT_EMAIL

        # Told once: when the order's new status has its own email (confirmed, declined,
        # cancelled, expired), the reply stays on the ticket without a second email.
        _append_message(locked, body=text, visibility=MessageVisibility.PUBLIC, actor=actor,
                        author_name=_("Support"), now=now, email=order.status not in STATUSES_THAT_EMAIL)
        _save(locked, _move_locked(locked, to=Status.RESOLVED, actor=actor,
                                   reason=_("The order is no longer unreturned."), now=now))
    return locked


def resolve_tickets_of_returned_orders(*, actor: Actor, limit: int = 500) -> int:
    """Resolve the open tickets whose order stopped being unreturned after the ticket was
    opened: the periodic pass for the sweep's unflagging, which reaches support as no
    per-order signal work (see `support.receivers`). Tickets on orders that were never
    unreturned after the ticket opened (a customer's question on a normal order) stay open."""
    order_ids = list(
        Ticket.objects.filter(status__in=_OPEN, order__stuck_since__isnull=True, order__resolved_at__gte=F("created_at"))
        .order_by("pk").values_list("order_id", flat=True)[:limit]
    )
    return sum(1 for order_id in order_ids if resolve_order_ticket(order_id=order_id, actor=actor) is not None)


def _escalation_due_q(now: datetime) -> Q:
    never_or_before = lambda field: Q(escalated_at__isnull=True) | Q(escalated_at__lt=F(field))  # noqa: E731
    first_response = sla.first_response_due_by(now) & never_or_before("first_response_due_at")
    resolution = sla.resolution_due_by(now) & never_or_before("resolution_due_at")
    return sla.running_open() & (first_response | resolution)


def escalate_overdue_tickets(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Escalate the open tickets whose SLA passed, once per breach: the priority goes up a
    step, the status becomes escalated, and the assignee (or the leads) get an email."""
    now = now or timezone.now()
    ids = list(Ticket.objects.filter(_escalation_due_q(now)).order_by("resolution_due_at", "pk")
               .values_list("pk", flat=True)[:batch_size])
    done = 0
    for ticket_id in ids:
        with transaction.atomic():
            locked = _lock_ticket(ticket_id)
            # Checked again under the lock: another pass or a person may have been first.
            breach = sla.breached_due(locked, now=now)
            if breach is None or (locked.escalated_at is not None and locked.escalated_at >= breach):
                continue
            old_priority, old_status = locked.priority, locked.status
            step = min(PRIORITY_ORDER.index(old_priority) + 1, len(PRIORITY_ORDER) - 1)
            locked.priority = PRIORITY_ORDER[step]
            # The status moves through the one checked path (it also stamps escalated_at);
            # an already escalated ticket only gets its priority and time.
            fields = _move_locked(locked, to=Status.ESCALATED, actor=Actor.system(),
                                  reason=_("The SLA was breached."), now=now)
            locked.escalated_at = now
            _save(locked, ["priority", "escalated_at", *fields])
            which = (_("first response") if locked.first_responded_at is None and locked.first_response_due_at
                     and locked.first_response_due_at <= now else _("resolution"))
            _record(locked, kind=EventKind.ESCALATED, actor=Actor.system(), from_value=old_priority,
                    to_value=locked.priority, now=now,
                    message=_("The %(which)s was due at %(due)s; the ticket was %(status)s.")
                    % {"which": which, "due": timezone.localtime(breach).strftime("%Y-%m-%d %H:%M"),
                       "status": _status_label(old_status)})
            ticket_pk = locked.pk
            transaction.on_commit(lambda pk=ticket_pk: _notify_escalation(pk))
            done += 1
    return done


def _notify_escalation(ticket_id: int) -> None:
    ticket = Ticket.objects.select_related("assignee", "order", "merchant").get(pk=ticket_id)
    if ticket.assignee_id and ticket.assignee.is_active and ticket.assignee.email:
        recipients = [ticket.assignee.email]
    else:
        recipients = lead_emails()
    if not recipients:
        log.warning("ticket %s escalated, but nobody can be told (no assignee, no active lead)", ticket_id)
        return
    subject = _("Ticket #%(ticket)s escalated: %(subject)s") % {"ticket": ticket.pk, "subject": ticket.subject}
    try:
        link = settings.SITE_URL + reverse("admin:support_ticket_change", args=[ticket.pk])
    except NoReverseMatch:  # the ticket admin is not installed
        link = ""
    body = "\n".join([
        _("Ticket #%(ticket)s missed its service level and is now %(priority)s priority.")
        % {"ticket": ticket.pk, "priority": ticket.get_priority_display()},
        "",
        _("Merchant: %(merchant)s") % {"merchant": ticket.merchant.name},
        *([_("Order: %(order)s") % {"order": ticket.order.reference}] if ticket.order_id else []),
        _("Assigned to: %(assignee)s") % {
            "assignee": ticket.assignee.get_username() if ticket.assignee_id else _("nobody")},
        *(["", link] if link else []),
    ])
    send_mail(subject[:200], body, None, recipients, fail_silently=False)


def open_tickets_for_stuck_orders(*, now: datetime | None = None, batch_size: int = 200) -> int:
    """Open (or reopen) the ticket of every order unreturned past its merchant's
    "escalate after", or needing review, that has no open ticket. Orders whose ticket a
    person resolved or closed during this unreturned spell are left to that decision."""
    now = now or timezone.now()
    open_ticket_q = Ticket.objects.filter(order=OuterRef("pk"), status__in=_OPEN)
    decided_q = Ticket.objects.filter(order=OuterRef("pk"), status__in=sorted(TICKET_DONE_STATUSES),
                                      resolved_at__gte=OuterRef("stuck_since"))
    ids = list(
        Order.objects.filter(stuck_since__isnull=False)
        .alias(escalate_at=ExpressionWrapper(F("stuck_since") + F("merchant__escalate_after"),
                                             output_field=DateTimeField()))
        .filter(Q(needs_review=True) | Q(escalate_at__lte=now))
        .filter(~Exists(open_ticket_q), ~Exists(decided_q))
        .order_by("stuck_since", "pk")
        .values_list("pk", flat=True)[:batch_size]
    )
    actor = Actor.system("support automation")
    # One outage query for the pass, not one per ticket's diagnosis note.
    outage = detect_outage_providers(now=now) if ids else frozenset()
    done = 0
    for order_id in ids:
        try:
            ticket_for_stuck_order(order=order_id, actor=actor, outage_providers=outage)
            done += 1
        except DomainError as exc:
            log.warning("no ticket for unreturned order %s: %s", order_id, exc.message)
    return done
