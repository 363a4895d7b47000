"""One timeline per order: events, provider checks and callbacks merged, newest first.

Other apps add their own entries (ticket messages) by registering a source in their
`AppConfig.ready`; `orders` never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.translation import gettext as _

from orders.models import Order, OrderEvent, PaymentCheck, ProviderCallback


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # event, check, callback, or what a registered source says
    title: str
    body: str = ""
    actor: str = ""
    internal: bool = False  # staff-only: hidden from merchants and customers
    tone: str = ""  # ok, warn, error: how the entry is shown
    data: dict[str, Any] = field(default_factory=dict)


TimelineSource = Callable[[Order], list[TimelineEntry]]
_sources: list[TimelineSource] = []


def register_source(source: TimelineSource) -> None:
    if source not in _sources:
        _sources.append(source)


def _actor_label(event: OrderEvent) -> str:
    if event.actor_user_id:
        return event.actor_user.get_username()
    return event.data.get("actor_label") or str(OrderEvent.ActorKind(event.actor_kind).label)


_INTERNAL_EVENTS = {OrderEvent.Kind.NOTE, OrderEvent.Kind.APPROVAL_REQUESTED, OrderEvent.Kind.APPROVAL_DECIDED,
                    OrderEvent.Kind.ASSIGNED, OrderEvent.Kind.ACCESS_REPORTED}


def _events(order: Order) -> list[TimelineEntry]:
    entries = []
    for event in order.events.select_related("actor_user").order_by("-created_at", "-id"):
        tone = "error" if event.kind in (OrderEvent.Kind.CONFIRMATION_FAILED,) else (
            "warn" if event.kind in (OrderEvent.Kind.FLAGGED, OrderEvent.Kind.REVIEW_REQUESTED,
                                     OrderEvent.Kind.DIAGNOSIS_CHANGED) else "")
        entries.append(TimelineEntry(
            at=event.created_at, kind="note" if event.kind == OrderEvent.Kind.NOTE else "event",
            title=str(OrderEvent.Kind(event.kind).label), body=event.message, actor=_actor_label(event),
            internal=event.kind in _INTERNAL_EVENTS, tone=tone, data=event.data,
        ))
    return entries


def _checks(order: Order) -> list[TimelineEntry]:
    entries = []
    checks = PaymentCheck.objects.filter(attempt__order=order).select_related("attempt").order_by("-checked_at", "-id")
    for check in checks[:200]:
        if check.error_kind != PaymentCheck.ErrorKind.NONE:
            title = _("Check at %(provider)s failed: %(error)s") % {
                "provider": check.attempt.provider, "error": PaymentCheck.ErrorKind(check.error_kind).label}
            body, tone = check.error_message, "error"
        else:
            title = _("Check at %(provider)s: %(status)s") % {
                "provider": check.attempt.provider, "status": check.get_reported_status_display()}
            body = " ".join(filter(None, [
                f"{check.reported_amount} {check.reported_currency}" if check.reported_amount is not None else "",
                check.failure_code, check.action_required]))
            tone = "ok" if check.reported_status == "succeeded" else ""
        entries.append(TimelineEntry(
            at=check.checked_at, kind="check", title=title, body=body,
            actor=str(PaymentCheck.Source(check.source).label), internal=True, tone=tone,
            data={"latency_ms": check.latency_ms, "http_status": check.http_status,
                  "reference": check.attempt.provider_reference},
        ))
    return entries


def _callbacks(order: Order) -> list[TimelineEntry]:
    entries = []
    for callback in ProviderCallback.objects.filter(attempt__order=order).order_by("-received_at", "-id")[:200]:
        entries.append(TimelineEntry(
            at=callback.received_at, kind="callback",
            title=_("Callback from %(provider)s: %(outcome)s") % {
                "provider": callback.provider, "outcome": callback.get_outcome_display()},
            body=callback.error, actor=callback.provider, internal=True,
            tone="" if callback.signature_valid else "error",
            data={"event_id": callback.event_id, "signature_valid": callback.signature_valid},
        ))
    return entries


def order_timeline(order: Order, *, include_internal: bool = True) -> list[TimelineEntry]:
    entries = _events(order) + _checks(order) + _callbacks(order)
    for source in _sources:
        entries += source(order)
    if not include_internal:
        entries = [entry for entry in entries if not entry.internal]
    return sorted(entries, key=lambda entry: entry.at, reverse=True)
