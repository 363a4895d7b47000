"""Service levels: how fast a ticket must get its first reply and its resolution.

A merchant's own `SlaTarget` row wins, then the default row (no merchant), then the
built-in targets below. The clock pauses while a ticket waits on the customer: on resume
both due times move forward by the time spent paused, so the customer's silence never
counts against us.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from orders.models import Merchant
from support.models import TICKET_OPEN_STATUSES, SlaTarget, Ticket, TicketPriority


@dataclass(frozen=True)
class Targets:
    first_response: timedelta
    resolution: timedelta


BUILT_IN_TARGETS: dict[str, Targets] = {
    TicketPriority.URGENT: Targets(timedelta(hours=1), timedelta(hours=4)),
    TicketPriority.HIGH: Targets(timedelta(hours=4), timedelta(hours=24)),
    TicketPriority.NORMAL: Targets(timedelta(hours=8), timedelta(days=3)),
    TicketPriority.LOW: Targets(timedelta(hours=24), timedelta(days=7)),
}


def targets_for(merchant: Merchant | int | None, priority: str) -> Targets:
    """The targets for a ticket of `priority` of this merchant (one query)."""
    merchant_id = merchant if isinstance(merchant, int) or merchant is None else merchant.pk
    scope = Q(merchant__isnull=True)
    if merchant_id is not None:
        scope |= Q(merchant_id=merchant_id)
    rows = list(SlaTarget.objects.filter(scope, priority=priority).values("merchant_id", "first_response", "resolution"))
    # The merchant's own row sorts first (a null merchant_id sorts last).
    rows.sort(key=lambda row: row["merchant_id"] is None)
    if rows:
        return Targets(rows[0]["first_response"], rows[0]["resolution"])
    return BUILT_IN_TARGETS[priority]


def due_times(*, merchant: Merchant | int | None, priority: str, start: datetime) -> tuple[datetime, datetime]:
    """(first response due, resolution due) of a ticket whose clock starts at `start`."""
    targets = targets_for(merchant, priority)
    return start + targets.first_response, start + targets.resolution


def pause(ticket: Ticket, *, now: datetime) -> list[str]:
    """Stop the ticket's clock; returns the fields changed (the caller saves them)."""
    if ticket.sla_paused_at is not None:
        return []
    ticket.sla_paused_at = now
    return ["sla_paused_at"]


def resume(ticket: Ticket, *, now: datetime) -> list[str]:
    """Restart a paused clock: the due times move forward by the time spent paused."""
    if ticket.sla_paused_at is None:
        return []
    paused = max(now - ticket.sla_paused_at, timedelta(0))
    if ticket.first_response_due_at is not None:
        ticket.first_response_due_at += paused
    if ticket.resolution_due_at is not None:
        ticket.resolution_due_at += paused
    ticket.sla_paused_at = None
    return ["first_response_due_at", "resolution_due_at", "sla_paused_at"]


def retarget(ticket: Ticket, *, old_priority: str, new_priority: str) -> list[str]:
    """A new priority moves the due times by the difference between the two targets, so the
    time already spent (and any paused time already added) still counts."""
    old, new = targets_for(ticket.merchant_id, old_priority), targets_for(ticket.merchant_id, new_priority)
    changed = []
    if ticket.first_response_due_at is not None and ticket.first_responded_at is None:
        ticket.first_response_due_at += new.first_response - old.first_response
        changed.append("first_response_due_at")
    if ticket.resolution_due_at is not None:
        ticket.resolution_due_at += new.resolution - old.resolution
        changed.append("resolution_due_at")
    return changed


def first_response_due_by(moment: datetime) -> Q:
    """Tickets whose first response, still owed, is due at or before `moment`."""
    return Q(first_responded_at__isnull=True, first_response_due_at__lte=moment)


def resolution_due_by(moment: datetime) -> Q:
    return Q(resolution_due_at__lte=moment)


def due_by(moment: datetime) -> Q:
    """Tickets with a first response or a resolution due at or before `moment`: overdue with
    `moment` = now (escalation, the metrics, the alert), due soon with a later one (queues)."""
    return first_response_due_by(moment) | resolution_due_by(moment)


def running_open() -> Q:
    """Open tickets whose SLA clock runs (not paused while waiting on the customer)."""
    return Q(status__in=sorted(TICKET_OPEN_STATUSES), sla_paused_at__isnull=True)


def breached_due(ticket: Ticket, *, now: datetime) -> datetime | None:
    """The latest due time the ticket has passed, or None (a paused clock breaches nothing)."""
    if ticket.sla_paused_at is not None or not ticket.is_open:
        return None
    passed = []
    if ticket.first_responded_at is None and ticket.first_response_due_at and ticket.first_response_due_at <= now:
        passed.append(ticket.first_response_due_at)
    if ticket.resolution_due_at and ticket.resolution_due_at <= now:
        passed.append(ticket.resolution_due_at)
    return max(passed) if passed else None
