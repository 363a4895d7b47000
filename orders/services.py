"""The single write path for orders and payment attempts.

Every change of `Order.status` or `PaymentAttempt.status` happens here: the row is locked,
the move is checked against `orders.states`, only changed fields are saved, one
`OrderEvent` records actor and reason, and `order_state_changed` is sent after commit.
Admin actions, API views, merchant pages, tasks and commands all call these functions.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
import zlib
from contextlib import contextmanager
from datetime import timedelta
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, models, transaction
from django.utils.module_loading import import_string
from django.utils import timezone
from django.utils.translation import gettext as _

from orders import statements
from orders.actors import Actor
from orders.causes import Cause, category_of
from orders.currencies import MINOR_UNITS, is_currency
from orders.exceptions import Conflict, DomainError, IllegalTransition, ValidationFailed
from orders.models import Merchant, Order, OrderEvent, PaymentApproval, PaymentAttempt, PaymentCheck
from orders.policy import PolicyBook, next_check_at
from orders.providers.base import ProviderError, ProviderResult
from orders.signals import order_state_changed
from orders.states import (
    ATTEMPT_FINAL,
    ATTEMPT_OPEN,
    ORDER_CAPTURED,
    ORDER_TERMINAL,
    ORDER_TRANSITIONS,
    AttemptStatus,
    OrderStatus,
    attempt_move_allowed,
    order_move_allowed,
)

if TYPE_CHECKING:
    from orders.diagnosis import Diagnosis

Kind = OrderEvent.Kind


class DuplicateReference(DomainError):
    code = "duplicate_reference"

    def __init__(self, message: str, *, existing_id: int) -> None:
        super().__init__(message)
        self.existing_id = existing_id


# --- helpers shared by the services below -------------------------------------------------


_event_buffer = threading.local()


@contextmanager
def _events_in_one_insert():
    """Collect the events recorded inside the block and insert them with one statement at its
    end (the re-check's hot path records three per answer). Must run inside the caller's
    transaction, so the events commit or roll back with the rest."""
    if getattr(_event_buffer, "events", None) is not None:
        yield  # already collecting: the outer block inserts
        return
    _event_buffer.events = []
    try:
        yield
        if _event_buffer.events:
            OrderEvent.objects.bulk_create(_event_buffer.events)
    finally:
        _event_buffer.events = None


def _record_event(**fields: Any) -> OrderEvent:
    """Append an event of the order (`_new_event`'s arguments), or keep it for the batch that
    `_events_in_one_insert` inserts at once."""
    event = _new_event(**fields)
    buffered = getattr(_event_buffer, "events", None)
    if buffered is not None:
        buffered.append(event)
        return event
    event.save()
    return event


def _new_event(
    *,
    order: Order,
    kind: str,
    actor: Actor,
    message: str = "",
    data: dict[str, Any] | None = None,
    attempt: PaymentAttempt | None = None,
) -> OrderEvent:
    """An event of the order, not saved yet."""
    payload = dict(data or {})
    if actor.label:
        payload.setdefault("actor_label", actor.label)
    return OrderEvent(order=order, attempt=attempt, kind=kind, actor_kind=actor.kind, actor_user_id=actor.user_id,
                      message=message, data=payload)


def _lock_order(order_id: int, *, merchant: Merchant | None = None) -> Order:
    """Lock an order row, with its merchant. A caller that loaded the merchant moments ago
    (the re-check batch) passes it, and the lock skips the join; merchant settings edited in
    between apply from the next batch."""
    if merchant is not None:
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.merchant_id == merchant.pk:
            order.merchant = merchant
        return order
    # of=("self",): without it PostgreSQL also locks the joined merchant row FOR UPDATE, so
    # every write to any order of one merchant would queue behind every other (and writers
    # that lock an attempt with its order could deadlock on the merchant row).
    return Order.objects.select_for_update(of=("self",)).select_related("merchant").get(pk=order_id)


def _lock_attempt(
    attempt_id: int, *, order_id: int | None = None, merchant: Merchant | None = None
) -> tuple[Order, PaymentAttempt]:
    """Lock an attempt and its order, always the order first, so that concurrent writers of
    one order queue instead of deadlocking. An attempt never changes order, so a caller that
    already knows it passes `order_id` (and may pass the merchant, see `_lock_order`)."""
    if order_id is None:
        order_id = PaymentAttempt.objects.values_list("order_id", flat=True).get(pk=attempt_id)
    order = _lock_order(order_id, merchant=merchant)
    return order, PaymentAttempt.objects.select_for_update().get(pk=attempt_id, order_id=order_id)


def _notify_after_commit(*, order: Order, old_status: str, was_unreturned: bool, actor: Actor) -> None:
    payload = {
        "order_id": order.pk,
        "old_status": old_status,
        "new_status": order.status,
        "was_unreturned": was_unreturned,
        "is_unreturned": order.stuck_since is not None,
        "cause": order.stuck_cause,
        "actor_kind": actor.kind,
    }
    transaction.on_commit(lambda: order_state_changed.send(sender=Order, **payload))


def _jsonable(raw: Any) -> Any:
    try:
        return json.loads(json.dumps(raw, default=str))
    except (TypeError, ValueError):
        return {"unserializable": str(raw)[:500]}


def _excerpt(raw: Any, limit: int = 500) -> str:
    return json.dumps(_jsonable(raw), ensure_ascii=False, sort_keys=True)[:limit]


def _check_money(amount: Decimal, currency: str) -> None:
    if not is_currency(currency):
        raise ValidationFailed(_("“%(currency)s” is not an ISO 4217 currency code.") % {"currency": currency},
                               field="currency")
    if amount <= 0:
        raise ValidationFailed(_("The amount must be greater than zero."), field="amount")
    places = MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ValidationFailed(
            _("%(currency)s amounts have at most %(places)d decimal places.") % {"currency": currency, "places": places},
            field="amount",
        )
    # The columns hold fewer places and digits than some currencies allow (BHD, KWD have 3):
    # refuse what cannot be stored exactly instead of letting the database round or overflow.
    field = Order._meta.get_field("amount")
    if amount != amount.quantize(Decimal(1).scaleb(-field.decimal_places)):
        raise ValidationFailed(
            _("Amounts with more than %(places)d decimal places are not supported yet.")
            % {"places": field.decimal_places},
            field="amount",
        )
    if amount >= Decimal(10) ** (field.max_digits - field.decimal_places):
        raise ValidationFailed(_("The amount is too large."), field="amount")


# --- orders -------------------------------------------------------------------------------


def create_order(
    *,
    merchant: Merchant,
    reference: str,
    amount: Decimal,
    currency: str,
    customer_name: str,
    customer_email: str,
    customer_phone: str = "",
    shipping_address: str = "",
    actor: Actor,
    submitted_at=None,
) -> Order:
    """Record a submitted order. A reference the merchant already used raises DuplicateReference."""
    reference = reference.strip()
    if not reference:
        raise ValidationFailed(_("The order reference must not be empty."))
    if len(reference) > Order._meta.get_field("reference").max_length:
        raise ValidationFailed(
            _("The order reference is longer than %(limit)d characters.")
            % {"limit": Order._meta.get_field("reference").max_length}
        )
    if not merchant.active:
        raise ValidationFailed(_("Merchant %(code)s is inactive and cannot take orders.") % {"code": merchant.code})
    _check_money(amount, currency)
    now = submitted_at or timezone.now()
    order = Order(
        merchant=merchant,
        reference=reference,
        amount=amount,
        currency=currency,
        customer_name=customer_name,
        customer_email=customer_email,
        customer_phone=customer_phone,
        shipping_address=shipping_address,
        submitted_at=now,
        status_changed_at=now,
        sweep_due_at=now + merchant.stuck_after,
    )
    event = _new_event(order=order, kind=Kind.CREATED, actor=actor, message=_("Order submitted."),
                       data={"amount": str(amount), "currency": currency})
    try:
        # The order and its event in one statement (PostgreSQL) or one transaction: intake is
        # the busiest write (docs/performance.md, "API").
        statements.insert_with_event(order, event, link="order_id")
    except IntegrityError:
        existing = Order.objects.filter(merchant=merchant, reference=reference).values_list("pk", flat=True).first()
        if existing is None:
            raise
        raise DuplicateReference(
            _("Merchant %(code)s already has an order with reference %(reference)s.")
            % {"code": merchant.code, "reference": reference},
            existing_id=existing,
        ) from None
    return order


def _sweep_due(order: Order, status: str, now):
    """When the sweep should look at an order next after it moves to `status`."""
    if status in ORDER_TERMINAL:
        # Terminal orders are only revisited when money is wrong, which a result flags directly.
        return None
    if order.stuck_since is not None:
        return now  # new evidence for a flagged order: re-diagnose at once
    return now + order.merchant.stuck_after


def _move_order(
    locked: Order,
    *,
    to: str,
    actor: Actor,
    reason: str,
    data: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> Order:
    """Apply one checked status move to an order already locked by the caller."""
    current = locked.status
    if not order_move_allowed(current, to):
        allowed = ", ".join(str(OrderStatus(s).label) for s in sorted(ORDER_TRANSITIONS[current])) or _("none")
        raise IllegalTransition(
            _("Order %(reference)s is %(current)s and cannot become %(target)s (allowed next: %(allowed)s).")
            % {
                "reference": locked.reference,
                "current": OrderStatus(current).label,
                "target": OrderStatus(to).label if to in OrderStatus.values else to,
                "allowed": allowed,
            }
        )
    now = timezone.now()
    was_unreturned = locked.stuck_since is not None
    fields = {"status": to, "status_changed_at": now, "sweep_due_at": _sweep_due(locked, to, now), **(changes or {})}
    if to in ORDER_TERMINAL and was_unreturned:
        # Reaching a final outcome resolves the unreturned flag.
        fields.update(stuck_since=None, stuck_cause="", stuck_category="", needs_review=False, resolved_at=now)
    changed = [name for name, value in fields.items() if getattr(locked, name) != value]
    for name in changed:
        setattr(locked, name, fields[name])
    locked.save(update_fields=[*changed, "updated_at"])
    event_data = {"from": current, "to": to, **(data or {})}
    if was_unreturned and locked.stuck_since is None:
        event_data["resolved_unreturned"] = True
    _record_event(order=locked, kind=Kind.STATUS_CHANGED, actor=actor, message=reason, data=event_data)
    _notify_after_commit(order=locked, old_status=current, was_unreturned=was_unreturned, actor=actor)
    return locked


def transition_order(
    *,
    order: Order | int,
    to: str,
    actor: Actor,
    reason: str = "",
    data: dict[str, Any] | None = None,
    captured_amount: Decimal | None = None,
) -> Order:
    """Move an order to `to`, or raise IllegalTransition and change nothing.

    Moving to `paid` needs `captured_amount`; prefer `mark_order_paid`, which takes it
    from a succeeded attempt.
    """
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        changes: dict[str, Any] = {}
        if to == OrderStatus.PAID:
            if captured_amount is None or captured_amount <= 0:
                raise ValidationFailed(_("An order can only become paid with the captured amount."))
            if captured_amount > locked.amount:
                raise ValidationFailed(
                    _("The captured amount %(captured)s exceeds the order amount %(amount)s.")
                    % {"captured": captured_amount, "amount": locked.amount}
                )
            changes["captured_amount"] = captured_amount
        return _move_order(locked, to=to, actor=actor, reason=reason, data=data, changes=changes)


def mark_order_paid(*, attempt: PaymentAttempt | int, actor: Actor, reason: str = "") -> Order:
    """Move the attempt's order to paid from a succeeded attempt whose money matches the order."""
    attempt_id = attempt if isinstance(attempt, int) else attempt.pk
    with transaction.atomic():
        locked, current_attempt = _lock_attempt(attempt_id)
        if current_attempt.status != AttemptStatus.SUCCEEDED:
            raise ValidationFailed(
                _("Payment attempt %(attempt)s has not succeeded (it is %(status)s).")
                % {"attempt": current_attempt, "status": AttemptStatus(current_attempt.status).label}
            )
        if current_attempt.currency != locked.currency or current_attempt.amount != locked.amount:
            raise ValidationFailed(
                _("The payment (%(paid)s %(paid_currency)s) does not match the order (%(amount)s %(currency)s).")
                % {
                    "paid": current_attempt.amount,
                    "paid_currency": current_attempt.currency,
                    "amount": locked.amount,
                    "currency": locked.currency,
                }
            )
        return _move_order(
            locked,
            to=OrderStatus.PAID,
            actor=actor,
            reason=reason,
            data={"attempt_id": current_attempt.pk, "provider_reference": current_attempt.provider_reference},
            changes={"captured_amount": current_attempt.amount},
        )


# --- payment attempts ---------------------------------------------------------------------


def create_payment_attempt(
    *,
    order: Order | int,
    provider: str,
    actor: Actor,
    provider_reference: str = "",
    idempotency_key: str | None = None,
    status: str = AttemptStatus.INITIATED,
    next_check_at=None,
    created_at=None,
) -> PaymentAttempt:
    """Start a payment attempt for the whole order amount; the order becomes payment_pending."""
    order_id = order if isinstance(order, int) else order.pk
    if status not in (AttemptStatus.INITIATED, AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
        raise ValidationFailed(_("A new payment attempt starts as initiated, pending or unknown."))
    if not provider:
        raise ValidationFailed(_("A payment attempt needs a provider."))
    with transaction.atomic():
        locked = _lock_order(order_id)
        if locked.status not in (OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, OrderStatus.PAYMENT_FAILED):
            raise IllegalTransition(
                _("Order %(reference)s is %(status)s; no new payment attempt can be started.")
                % {"reference": locked.reference, "status": OrderStatus(locked.status).label}
            )
        now = created_at or timezone.now()
        try:
            with transaction.atomic():
                attempt = PaymentAttempt.objects.create(
                    order=locked,
                    provider=provider,
                    provider_reference=provider_reference,
                    idempotency_key=idempotency_key or uuid.uuid4().hex,
                    amount=locked.amount,
                    currency=locked.currency,
                    status=status,
                    created_at=now,
                    status_changed_at=now,
                    next_check_at=next_check_at,
                )
        except IntegrityError:
            raise Conflict(
                _("A payment attempt with this idempotency key or provider reference already exists."),
                code="duplicate_attempt",
            ) from None
        _record_event(
            order=locked,
            attempt=attempt,
            kind=Kind.ATTEMPT_CREATED,
            actor=actor,
            message=_("Payment attempt started at %(provider)s.") % {"provider": provider},
            data={"attempt_id": attempt.pk, "provider": provider, "status": status},
        )
        if locked.status != OrderStatus.PAYMENT_PENDING:
            _move_order(
                locked,
                to=OrderStatus.PAYMENT_PENDING,
                actor=actor,
                reason=_("A payment attempt was started."),
                data={"attempt_id": attempt.pk},
            )
    return attempt


def transition_attempt(
    *,
    attempt: PaymentAttempt | int,
    to: str,
    actor: Actor,
    reason: str = "",
    failure_code: str | None = None,
    action_required: str | None = None,
    provider_reference: str | None = None,
    data: dict[str, Any] | None = None,
) -> PaymentAttempt:
    """Move a payment attempt to `to`, or raise IllegalTransition and change nothing.

    The order row is locked first (always order, then attempt) so that concurrent writers
    of one order queue instead of deadlocking.
    """
    attempt_id = attempt if isinstance(attempt, int) else attempt.pk
    with transaction.atomic():
        locked_order, locked = _lock_attempt(attempt_id)
        return _move_attempt(
            locked_order,
            locked,
            to=to,
            actor=actor,
            reason=reason,
            failure_code=failure_code,
            action_required=action_required,
            provider_reference=provider_reference,
            data=data,
        )


def _move_attempt(
    locked_order: Order,
    locked: PaymentAttempt,
    *,
    to: str,
    actor: Actor,
    reason: str = "",
    failure_code: str | None = None,
    action_required: str | None = None,
    provider_reference: str | None = None,
    data: dict[str, Any] | None = None,
    pending: list[str] | None = None,
) -> PaymentAttempt:
    """Apply one checked status move to an attempt whose order and row the caller has locked.
    `pending`: fields the caller set on the attempt but has not saved; saved here too."""
    current = locked.status
    if not attempt_move_allowed(current, to):
        raise IllegalTransition(
            _("Payment attempt %(attempt)s is %(current)s and cannot become %(target)s.")
            % {
                "attempt": locked,
                "current": AttemptStatus(current).label,
                "target": AttemptStatus(to).label if to in AttemptStatus.values else to,
            }
        )
    fields: dict[str, Any] = {"status": to, "status_changed_at": timezone.now()}
    if failure_code is not None:
        fields["failure_code"] = failure_code
    if action_required is not None:
        fields["action_required"] = action_required
    if provider_reference:
        fields["provider_reference"] = provider_reference
    if to in ATTEMPT_FINAL:
        fields["next_check_at"] = None
    changed = [name for name, value in fields.items() if getattr(locked, name) != value]
    for name in changed:
        setattr(locked, name, fields[name])
    changed += [name for name in _take(pending) if name not in changed]
    if "provider_reference" in changed:
        # Only a new provider reference can collide with another attempt's; the savepoint
        # keeps the caller's transaction usable when it does.
        try:
            with transaction.atomic():
                locked.save(update_fields=changed)
        except IntegrityError:
            raise Conflict(
                _("Provider reference %(reference)s is already used by another attempt.")
                % {"reference": provider_reference},
                code="duplicate_attempt",
            ) from None
    else:
        locked.save(update_fields=changed)
    _record_event(
        order=locked_order,
        attempt=locked,
        kind=Kind.ATTEMPT_STATUS_CHANGED,
        actor=actor,
        message=reason,
        data={"attempt_id": locked.pk, "from": current, "to": to, **(data or {})},
    )
    return locked


# --- provider results: one path for callbacks, scheduled checks and "check now" -----------------


@dataclass(frozen=True)
class ApplyOutcome:
    """What applying one provider result did."""

    changed: bool
    attempt_status: str
    order_status: str
    review_cause: str = ""  # set when the result was held back for a person
    reconciled: bool = False  # a final result that never arrived by callback


def record_check(
    *,
    attempt: PaymentAttempt | int,
    source: str,
    result: ProviderResult | None = None,
    error: ProviderError | None = None,
    policies: PolicyBook | None = None,
    now=None,
) -> PaymentCheck:
    """Journal one provider answer (or why there was none) and schedule the next check.

    Runs in its own transaction, before the result is applied, so that a check is never
    lost even if applying it fails. (`check_and_apply` does both in one transaction.)
    """
    if (result is None) == (error is None):
        raise ValueError("record_check takes exactly one of result or error")
    now = now or timezone.now()
    attempt_id = attempt if isinstance(attempt, int) else attempt.pk
    with transaction.atomic():
        # Order first, then attempt, like every other writer: this transaction may write the
        # order too (review request, sweep_due_at), and taking the attempt first deadlocked
        # with apply_provider_result on PostgreSQL.
        locked_order, locked = _lock_attempt(attempt_id)
        check, pending = _journal_check_locked(
            locked_order, locked, source=source, result=result, error=error, policies=policies, now=now
        )
        locked.save(update_fields=pending)
        # New evidence: a flagged order is re-diagnosed by the next sweep. The order row is
        # locked, so its flag as loaded is current.
        if locked_order.stuck_since is not None:
            Order.objects.filter(pk=locked.order_id).update(sweep_due_at=now)
    return check


def _journal_check_locked(
    locked_order: Order,
    locked: PaymentAttempt,
    *,
    source: str,
    result: ProviderResult | None,
    error: ProviderError | None,
    policies: PolicyBook | None,
    now,
) -> tuple[PaymentCheck, list[str]]:
    """Insert the check and set the attempt's check fields and next check time; returns the
    check and the attempt fields the caller must still save."""
    locked.order = locked_order
    if result is not None:
        check = PaymentCheck.objects.create(
            attempt=locked,
            source=source,
            reported_status=result.status,
            reported_amount=result.amount,
            reported_currency=result.currency,
            failure_code=result.failure_code,
            action_required=result.action_required,
            http_status=result.http_status,
            latency_ms=result.latency_ms,
            response_excerpt=_excerpt(result.raw),
            checked_at=now,
        )
        locked.last_error_code, locked.last_error_message = "", ""
        locked.last_raw_response = _jsonable(result.raw)
        status_for_schedule = result.status
    else:
        check = PaymentCheck.objects.create(
            attempt=locked,
            source=source,
            error_kind=error.kind,
            error_message=error.message[:2000],
            http_status=error.http_status,
            latency_ms=error.latency_ms,
            response_excerpt=error.excerpt[:500],
            checked_at=now,
        )
        locked.last_error_code, locked.last_error_message = error.kind, error.message[:2000]
        status_for_schedule = locked.status
    locked.check_count += 1
    locked.last_checked_at = now
    fields = ["check_count", "last_checked_at", "last_error_code", "last_error_message", "last_raw_response"]
    if locked.status in ATTEMPT_OPEN and status_for_schedule in ATTEMPT_OPEN:
        policy = (policies or PolicyBook()).for_attempt(locked.provider, locked_order.merchant_id)
        locked.next_check_at = next_check_at(policy, status=status_for_schedule, checks_done=locked.check_count, now=now)
        fields.append("next_check_at")
        if locked.next_check_at is None:
            _request_review_locked(
                locked_order,
                attempt=locked,
                message=_("The re-check schedule of attempt %(attempt)s is used up; a person must decide.")
                % {"attempt": locked},
                data={"check_count": locked.check_count},
            )
    return check, fields


@dataclass(frozen=True)
class CheckApplied:
    """What `check_and_apply` did: the journaled check, and the outcome of applying the
    answer, or the reason it could not be applied."""

    check: PaymentCheck
    outcome: ApplyOutcome | None = None
    error: DomainError | None = None


def check_and_apply(
    *,
    attempt: PaymentAttempt,
    source: str,
    actor: Actor,
    result: ProviderResult | None = None,
    error: ProviderError | None = None,
    policies: PolicyBook | None = None,
    now=None,
    has_callback: bool | None = None,
) -> CheckApplied:
    """Journal a re-check's answer and apply it in one transaction (the scheduled re-check's
    hot path: one pair of row locks and one commit instead of two).

    The check is still never lost: when applying fails, the transaction rolls back whole and
    the check is journaled on its own, as `record_check` does, before the error is reported.
    """
    if (result is None) == (error is None):
        raise ValueError("check_and_apply takes exactly one of result or error")
    now = now or timezone.now()
    try:
        with transaction.atomic(), _events_in_one_insert():
            loaded = PaymentAttempt.order.is_cached(attempt) and Order.merchant.is_cached(attempt.order)
            merchant = attempt.order.merchant if loaded else None
            order, locked = _lock_attempt(attempt.pk, order_id=attempt.order_id, merchant=merchant)
            check, pending = _journal_check_locked(
                order, locked, source=source, result=result, error=error, policies=policies, now=now
            )
            if result is None:
                locked.save(update_fields=pending)
                if order.stuck_since is not None:
                    Order.objects.filter(pk=order.pk).update(sweep_due_at=now)
                return CheckApplied(check)
            outcome = _apply_result_locked(
                order, locked, result=result, source=source, actor=actor, has_callback=has_callback, pending=pending
            )
            if pending:
                locked.save(update_fields=pending)
        return CheckApplied(check, outcome)
    except DomainError as exc:
        check = record_check(attempt=attempt.pk, source=source, result=result, policies=policies, now=now)
        return CheckApplied(check, error=exc)


def _request_review_locked(order: Order, *, attempt: PaymentAttempt | None, message: str, data: dict) -> bool:
    """Mark an order the caller has locked as needing a person, once.

    Returns whether it did (False when the order already needed review)."""
    if order.needs_review:
        return False
    order.needs_review = True
    order.sweep_due_at = timezone.now()
    order.save(update_fields=["needs_review", "sweep_due_at", "updated_at"])
    _record_event(
        order=order, attempt=attempt, kind=Kind.REVIEW_REQUESTED, actor=Actor.system(), message=message, data=data
    )
    return True


def apply_provider_result(
    *,
    attempt: PaymentAttempt | int,
    result: ProviderResult,
    source: str,
    actor: Actor,
    has_callback: bool | None = None,
) -> ApplyOutcome:
    """Apply what a provider says about an attempt. Idempotent: the same result twice
    changes nothing the second time.

    A success moves the order to paid (and confirmation follows after commit) only when the
    amount and currency match and no other attempt took money; otherwise the order goes to
    review and nothing is applied automatically.
    """
    attempt_id = attempt if isinstance(attempt, int) else attempt.pk
    with transaction.atomic():
        order, locked = _lock_attempt(attempt_id)
        return _apply_result_locked(order, locked, result=result, source=source, actor=actor, has_callback=has_callback)


def _apply_result_locked(
    order: Order,
    locked: PaymentAttempt,
    *,
    result: ProviderResult,
    source: str,
    actor: Actor,
    has_callback: bool | None,
    pending: list[str] | None = None,
) -> ApplyOutcome:
    """`apply_provider_result` on an order and attempt the caller has locked. `pending`: attempt
    fields the caller set but has not saved yet; the first save of the attempt here takes them
    along (and empties the list)."""
    target = result.status
    data = {"source": source, "provider_reference": result.provider_reference}

    if target == AttemptStatus.SUCCEEDED and not _money_matches(locked, result):
        return _hold_for_review(
            order,
            locked,
            cause=Cause.AMOUNT_MISMATCH,
            message=_("The provider reports %(amount)s %(currency)s for attempt %(attempt)s; the order is "
                      "%(order_amount)s %(order_currency)s. Nothing was applied.")
            % {
                "amount": result.amount,
                "currency": result.currency or locked.currency,
                "attempt": locked,
                "order_amount": order.amount,
                "order_currency": order.currency,
            },
            data={**data, "reported_amount": str(result.amount), "reported_currency": result.currency},
            move_attempt_to=AttemptStatus.SUCCEEDED,
            actor=actor,
            pending=pending,
        )

    changed = False
    if target != locked.status:
        if not attempt_move_allowed(locked.status, target):
            if locked.status in ATTEMPT_FINAL and target in ATTEMPT_FINAL:
                # The provider contradicts a final result we hold: never overwrite it.
                return _hold_for_review(
                    order,
                    locked,
                    cause="",
                    message=_("The provider now reports %(new)s for attempt %(attempt)s, which we hold as "
                              "%(old)s. Nothing was changed.")
                    % {"new": target, "attempt": locked, "old": AttemptStatus(locked.status).label},
                    data=data,
                    actor=actor,
                )
            return ApplyOutcome(False, locked.status, order.status)
        _move_attempt(
            order,
            locked,
            to=target,
            actor=actor,
            reason=_("Provider reported %(status)s (%(source)s).")
            % {"status": AttemptStatus(target).label, "source": source},
            failure_code=result.failure_code,
            action_required=result.action_required,
            provider_reference=result.provider_reference or None,
            data=data,
            pending=pending,
        )
        changed = True
    elif (result.action_required or "") != locked.action_required and target in ATTEMPT_OPEN:
        locked.action_required = result.action_required or ""
        locked.save(update_fields=["action_required", *_take(pending)])
        changed = True

    reconciled = False
    if changed and target in ATTEMPT_FINAL and source != PaymentCheck.Source.CALLBACK:
        callback_seen = has_callback if has_callback is not None else locked.callbacks.filter(
            signature_valid=True).exists()
        if not callback_seen:
            reconciled = True
            _record_event(
                order=order,
                attempt=locked,
                kind=Kind.RESULT_APPLIED,
                actor=Actor.system(),
                message=_("The provider's %(status)s result for %(attempt)s never arrived by callback; it was "
                          "taken from a %(source)s check instead.")
                % {"status": target, "attempt": locked, "source": source},
                data={**data, "reconciled": True, "cause": Cause.CALLBACK_LOST},
            )

    review_cause, review_raised = "", False
    if locked.status == AttemptStatus.SUCCEEDED:
        review_cause, review_raised = _apply_success_to_order(order, locked, actor=actor, data=data)
    elif locked.status in (AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CANCELLED):
        _apply_failure_to_order(order, locked, actor=actor, data=data)
    if order.stuck_since is not None and order.sweep_due_at != timezone.now():
        Order.objects.filter(pk=order.pk).update(sweep_due_at=timezone.now())
    # A review raised by an earlier delivery of the same result is not a change: only what
    # this call wrote counts, so applying a result twice reports no change the second time.
    return ApplyOutcome(changed or review_raised, locked.status, order.status, review_cause, reconciled)


def _take(pending: list[str] | None) -> list[str]:
    """The pending attempt fields, handed over to one save (the list is emptied)."""
    if not pending:
        return []
    taken = list(pending)
    pending.clear()
    return taken


def _money_matches(attempt: PaymentAttempt, result: ProviderResult) -> bool:
    if result.amount is not None and result.amount != attempt.amount:
        return False
    return not (result.currency and result.currency != attempt.currency)


def _hold_for_review(
    order: Order,
    attempt: PaymentAttempt,
    *,
    cause: str,
    message: str,
    data: dict,
    actor: Actor,
    move_attempt_to: str | None = None,
    pending: list[str] | None = None,
) -> ApplyOutcome:
    changed = False
    if move_attempt_to and attempt.status != move_attempt_to and attempt_move_allowed(attempt.status, move_attempt_to):
        # The provider did take money: record that on the attempt, but not on the order.
        _move_attempt(order, attempt, to=move_attempt_to, actor=actor, reason=message, data=data, pending=pending)
        changed = True
    already = order.needs_review and (not cause or order.stuck_cause == cause)
    if not already:
        if cause or order.stuck_since is not None:
            _flag_locked(order, cause=cause or order.stuck_cause, needs_review=True,
                         actor=Actor.system(), message=message, data=data, kind=Kind.REVIEW_REQUESTED)
        else:
            # No cause of the closed list fits (the provider contradicts a final result we hold):
            # ask a person without inventing a cause. A made-up flag (it used to be
            # amount_mismatch) was wrong, and the next sweep, finding no evidence for it,
            # unflagged the order and cleared the review.
            _request_review_locked(order, attempt=attempt, message=message, data=data)
        changed = True
    return ApplyOutcome(changed, attempt.status, order.status, cause or order.stuck_cause or "contradiction")


def _apply_success_to_order(order: Order, attempt: PaymentAttempt, *, actor: Actor, data: dict) -> tuple[str, bool]:
    """Move the order on after a success; returns the review cause when it cannot, and
    whether this call raised the review (False when an earlier delivery already did)."""
    if order.attempts.filter(status=AttemptStatus.SUCCEEDED).exclude(pk=attempt.pk).exists():
        raised = not (order.needs_review and order.stuck_cause == Cause.DUPLICATE_PAYMENT)
        if raised:
            _flag_locked(
                order, cause=Cause.DUPLICATE_PAYMENT, needs_review=True, actor=Actor.system(),
                message=_("Attempt %(attempt)s succeeded but another payment already did; refund one of them.")
                % {"attempt": attempt},
                data=data, kind=Kind.REVIEW_REQUESTED,
            )
        return Cause.DUPLICATE_PAYMENT, raised
    if order.status in ORDER_CAPTURED:
        return "", False  # this attempt is the one that paid the order: nothing more to do
    if order.status == OrderStatus.PAYMENT_FAILED:
        # A late success revives an order the customer had not given up on.
        _move_order(order, to=OrderStatus.PAYMENT_PENDING, actor=actor,
                    reason=_("A payment succeeded after the order was marked failed."), data=data)
    if order.status == OrderStatus.PAYMENT_PENDING:
        _move_order(order, to=OrderStatus.PAID, actor=actor, reason=_("Payment succeeded at the provider."),
                    data={**data, "attempt_id": attempt.pk}, changes={"captured_amount": attempt.amount})
        order_id = order.pk
        transaction.on_commit(lambda: _enqueue_confirmation(order_id))
        return "", False
    # Cancelled or expired, yet money moved: a person refunds or delivers.
    raised = _request_review_locked(
        order, attempt=attempt,
        message=_("Attempt %(attempt)s succeeded but the order is %(status)s; refund the customer or deliver.")
        % {"attempt": attempt, "status": OrderStatus(order.status).label},
        data=data,
    )
    return "late_payment", raised


def _apply_failure_to_order(order: Order, attempt: PaymentAttempt, *, actor: Actor, data: dict) -> None:
    if order.status != OrderStatus.PAYMENT_PENDING:
        return
    if order.attempts.filter(status__in=[*ATTEMPT_OPEN, AttemptStatus.SUCCEEDED]).exists():
        return  # another attempt may still pay the order
    _move_order(order, to=OrderStatus.PAYMENT_FAILED, actor=actor,
                reason=_("Payment %(status)s at the provider (%(code)s).")
                % {"status": attempt.status, "code": attempt.failure_code or "-"},
                data={**data, "attempt_id": attempt.pk, "failure_code": attempt.failure_code})


def _enqueue_confirmation(order_id: int) -> None:
    from django_q.tasks import async_task

    async_task("orders.tasks.confirm_order_task", order_id, task_name=f"confirm-order-{order_id}")


# --- the unreturned flag ----------------------------------------------------------------------


def _flag_locked(
    order: Order,
    *,
    cause: str,
    needs_review: bool,
    actor: Actor,
    message: str,
    data: dict | None = None,
    kind: str | None = None,
) -> None:
    """Raise or update the unreturned flag of a locked order, with one event."""
    now = timezone.now()
    was_unreturned = order.stuck_since is not None
    old_cause = order.stuck_cause
    order.stuck_since = order.stuck_since or now
    order.stuck_cause = cause
    order.stuck_category = category_of(cause)
    order.needs_review = order.needs_review or needs_review
    order.resolved_at = None
    order.sweep_due_at = now
    order.save(update_fields=["stuck_since", "stuck_cause", "stuck_category", "needs_review", "resolved_at",
                              "sweep_due_at", "updated_at"])
    event_kind = kind or (Kind.DIAGNOSIS_CHANGED if was_unreturned else Kind.FLAGGED)
    _record_event(order=order, kind=event_kind, actor=actor, message=message,
                  data={"cause": cause, "previous_cause": old_cause, **(data or {})})
    if not was_unreturned or old_cause != cause:
        _notify_after_commit(order=order, old_status=order.status, was_unreturned=was_unreturned, actor=actor)


# --- confirmation -------------------------------------------------------------------------------

# Seconds before each automatic retry of a confirmation that failed for a system reason.
CONFIRM_RETRY_DELAYS: tuple[int, ...] = (60, 300, 900, 3600)
_PHONE = re.compile(r"^\+?[0-9][0-9 ().xX\-]{5,24}$")


class ConfirmationFailed(DomainError):
    code = "confirmation_failed"


def customer_data_problems(order: Order) -> dict[str, str]:
    """What in the customer's data blocks confirmation, by field."""
    problems: dict[str, str] = {}
    if not order.shipping_address.strip():
        problems["shipping_address"] = _("The shipping address is empty.")
    if order.customer_phone and not _PHONE.match(order.customer_phone.strip()):
        problems["customer_phone"] = _("“%(phone)s” is not a phone number.") % {"phone": order.customer_phone}
    try:
        validate_email(order.customer_email)
    except DjangoValidationError:
        problems["customer_email"] = _("“%(email)s” is not an email address.") % {"email": order.customer_email}
    return problems


def _confirmation_hook():
    path = getattr(settings, "ORDER_CONFIRMATION_HOOK", "")
    return import_string(path) if path else None


def confirm_order(*, order: Order | int, actor: Actor) -> Order:
    """Issue the receipt and dispatch-note numbers of a paid order and confirm it.

    Idempotent for a confirmed order. A failure is recorded (and committed) before
    `ConfirmationFailed` is raised: customer-data problems wait for a person; other errors
    are retried automatically with backoff.
    """
    order_id = order if isinstance(order, int) else order.pk
    failure: ConfirmationFailed | None = None
    with transaction.atomic():
        locked = _lock_order(order_id)
        if locked.status == OrderStatus.CONFIRMED:
            return locked
        if locked.status != OrderStatus.PAID:
            _move_order(locked, to=OrderStatus.CONFIRMED, actor=actor, reason="")  # raises IllegalTransition
        problems = customer_data_problems(locked)
        error = ""
        if not problems:
            hook = _confirmation_hook()
            try:
                with transaction.atomic():
                    if hook is not None:
                        hook(locked)
            except Exception as exc:  # noqa: BLE001 - any fault of the fulfilment step is recorded and retried
                error = f"{type(exc).__name__}: {exc}"[:1000]
        if problems or error:
            failure = _record_confirmation_failure(locked, actor=actor, problems=problems, error=error)
        else:
            code = locked.merchant.code.upper()[:12]
            _move_order(
                locked,
                to=OrderStatus.CONFIRMED,
                actor=actor,
                reason=_("Order confirmed; receipt and dispatch note issued."),
                changes={
                    "receipt_number": f"RC-{code}-{locked.pk:08d}",
                    "dispatch_number": f"DN-{code}-{locked.pk:08d}",
                    "confirm_retry_at": None,
                },
            )
    if failure is not None:
        raise failure
    return locked


def _record_confirmation_failure(locked: Order, *, actor: Actor, problems: dict[str, str], error: str) -> ConfirmationFailed:
    now = timezone.now()
    locked.confirmation_failures += 1
    if problems:
        locked.confirm_retry_at = None  # retrying cannot fix the data; a person must
        message = _("Confirmation is blocked by the customer's data: %(problems)s") % {
            "problems": "; ".join(problems.values())
        }
        data: dict[str, Any] = {"error": message, "validation": problems}
    else:
        step = locked.confirmation_failures - 1
        delay = CONFIRM_RETRY_DELAYS[step] if step < len(CONFIRM_RETRY_DELAYS) else None
        locked.confirm_retry_at = now + timedelta(seconds=delay) if delay else None
        message = _("Confirmation failed: %(error)s") % {"error": error}
        data = {"error": error, "retry_at": locked.confirm_retry_at.isoformat() if locked.confirm_retry_at else None}
    locked.sweep_due_at = now if locked.stuck_since else locked.sweep_due_at
    locked.save(update_fields=["confirmation_failures", "confirm_retry_at", "sweep_due_at", "updated_at"])
    _record_event(order=locked, kind=Kind.CONFIRMATION_FAILED, actor=actor, message=message,
                  data={**data, "failures": locked.confirmation_failures})
    return ConfirmationFailed(message)


# --- the sweep's writes -----------------------------------------------------------------------

# A flagged order is looked at again this often even without new evidence, so an outage
# that ends or a threshold that passes is noticed.
FLAGGED_REVISIT = timedelta(minutes=10)


@dataclass
class DiagnosisCounts:
    flagged: int = 0
    changed: int = 0
    unflagged: int = 0
    unchanged: int = 0


def apply_diagnoses(
    *, orders: list[Order], diagnoses: dict[int, "Diagnosis | None"], now, counts: DiagnosisCounts
) -> None:
    """Store the sweep's verdicts for a batch of orders the caller has locked.

    Writes in bulk (one UPDATE and one INSERT per batch) and appends an event only where
    the verdict changed, so re-diagnosing an unchanged backlog costs almost nothing.
    """
    changed: list[Order] = []
    events: list[OrderEvent] = []
    notices: list[dict[str, Any]] = []
    system = Actor.system()
    for order in orders:
        diagnosis = diagnoses.get(order.pk)
        was_unreturned = order.stuck_since is not None
        old_cause = order.stuck_cause
        if diagnosis is None:
            order.sweep_due_at = _next_look(order, now)
            if was_unreturned:
                order.stuck_since, order.stuck_cause, order.stuck_category = None, "", ""
                order.needs_review, order.resolved_at = False, now
                counts.unflagged += 1
                events.append(_event(order, Kind.UNFLAGGED, system, _("No longer unreturned."), {"cause": old_cause}))
            else:
                counts.unchanged += 1
        else:
            order.sweep_due_at = now + FLAGGED_REVISIT
            review = order.needs_review or diagnosis.needs_review
            if not was_unreturned:
                order.stuck_since, order.resolved_at = now, None
                counts.flagged += 1
                kind = Kind.FLAGGED
            elif old_cause != diagnosis.cause:
                counts.changed += 1
                kind = Kind.DIAGNOSIS_CHANGED
            elif review and not order.needs_review:
                kind = Kind.REVIEW_REQUESTED
            else:
                kind = None
                counts.unchanged += 1
            order.stuck_cause, order.stuck_category, order.needs_review = diagnosis.cause, diagnosis.category, review
            if kind:
                events.append(_event(order, kind, system, diagnosis.summary, {
                    "cause": diagnosis.cause, "category": diagnosis.category, "previous_cause": old_cause,
                    "recommended_action": diagnosis.recommended_action, "evidence": _jsonable(diagnosis.evidence),
                }))
        changed.append(order)
        if was_unreturned != (order.stuck_since is not None) or old_cause != order.stuck_cause:
            notices.append({
                "order_id": order.pk, "old_status": order.status, "new_status": order.status,
                "was_unreturned": was_unreturned, "is_unreturned": order.stuck_since is not None,
                "cause": order.stuck_cause, "actor_kind": system.kind,
            })
    fields = ["stuck_since", "stuck_cause", "stuck_category", "needs_review", "resolved_at", "sweep_due_at"]
    _bulk_update_orders(changed, fields)
    _insert_events(events)
    if notices:
        transaction.on_commit(lambda: [order_state_changed.send(sender=Order, **n) for n in notices])


def _bulk_update_orders(orders: list[Order], fields: list[str]) -> None:
    """`Order.objects.bulk_update(orders, fields)`, in bulk statements on PostgreSQL.

    Django's bulk_update builds a `CASE WHEN id = ... THEN ...` expression per field and row
    (about 2 ms per order in Python), and passing the values as arrays costs nearly as much in
    psycopg's client-side quoting. On PostgreSQL the values are copied (`COPY`, encoded in C)
    into an emptied temporary table of this connection, and one `UPDATE ... FROM` applies
    them. Other databases keep bulk_update.
    """
    if not orders:
        return
    if connection.vendor != "postgresql":
        Order.objects.bulk_update(orders, fields, batch_size=500)
        return
    meta, quote = Order._meta, connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    names = [quote(f.column) for f in columns]
    # One staging table per set of fields (its columns are fixed when it is first created).
    staging = quote(f"staged_{meta.db_table}_{zlib.crc32(' '.join(fields).encode()):08x}")
    definition = ", ".join(f"{n} {f.db_type(connection)}" for n, f in zip(names, columns))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (id bigint, {definition})")
        # Emptied explicitly: inside an outer transaction (a test, a caller's atomic block)
        # no commit comes between two batches, and a stale row would join twice.
        cursor.execute(f"TRUNCATE {staging}")
        _copy_rows(cursor, staging, ["id", *names],
                   ([order.pk, *(getattr(order, f.attname) for f in columns)] for order in orders))
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} AS o SET {', '.join(f'{n} = v.{n}' for n in names)} "
            f"FROM {staging} AS v WHERE o.{quote(meta.pk.column)} = v.id"
        )


def _insert_events(events: list[OrderEvent]) -> None:
    """Insert many events: `COPY` on PostgreSQL (the sweep writes tens of thousands, and
    bulk_create's arrays of JSON cost more Python time than the insert itself)."""
    if not events:
        return
    if connection.vendor != "postgresql":
        OrderEvent.objects.bulk_create(events, batch_size=500)
        return
    fields = [f for f in OrderEvent._meta.concrete_fields if not f.primary_key]
    with connection.cursor() as cursor:
        quote = connection.ops.quote_name
        _copy_rows(cursor, quote(OrderEvent._meta.db_table), [quote(f.column) for f in fields], (
            [json.dumps(value) if isinstance(f, models.JSONField) else value
             for f in fields for value in [f.pre_save(event, add=True)]]
            for event in events
        ))


def _copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    """COPY rows (sequences of Python values, in the order of `columns`) into a table, inside
    the caller's transaction. PostgreSQL only; `cursor` is Django's cursor wrapper and the
    table and column names come quoted."""
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _event(order: Order, kind: str, actor: Actor, message: str, data: dict[str, Any]) -> OrderEvent:
    return OrderEvent(order=order, kind=kind, actor_kind=actor.kind, message=message, data=data)


def _next_look(order: Order, now):
    """When an order that is not unreturned could become so without new evidence."""
    if order.status in ORDER_TERMINAL:
        return None
    return max(order.status_changed_at + order.merchant.stuck_after, now + timedelta(seconds=1))


def adopt_provider_payment(
    *, order: Order | int, provider: str, result: ProviderResult, actor: Actor
) -> PaymentAttempt:
    """Record a payment the provider knows and we have no attempt for: a customer who paid
    twice, or our own checkout whose provider callback arrived before the checkout recorded
    its attempt (the provider echoes the checkout's idempotency key, which the attempt keeps,
    so the checkout's own `create_payment_attempt` is then refused as a duplicate).

    The result itself is not applied here: the payment is evidence to apply, whatever state
    the order is in. Only a still `submitted` order moves to `payment_pending`, because a
    payment for it has evidently started and every later result expects that status.
    """
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        existing = PaymentAttempt.objects.filter(provider=provider, provider_reference=result.provider_reference).first()
        if existing is not None:
            return existing
        key = result.idempotency_key
        if not key or PaymentAttempt.objects.filter(idempotency_key=key).exists():
            key = f"adopted-{uuid.uuid4().hex}"
        attempt = PaymentAttempt.objects.create(
            order=locked,
            provider=provider,
            provider_reference=result.provider_reference,
            idempotency_key=key,
            amount=locked.amount,
            currency=locked.currency,
            status=AttemptStatus.PENDING,
        )
        _record_event(
            order=locked,
            attempt=attempt,
            kind=Kind.ATTEMPT_CREATED,
            actor=actor,
            message=_("The provider reported payment %(reference)s, which we did not start; it was recorded.")
            % {"reference": result.provider_reference},
            data={"attempt_id": attempt.pk, "provider": provider, "adopted": True},
        )
        if locked.status == OrderStatus.SUBMITTED:
            # Without this a success would find the order "submitted", which no result moves
            # on, and ask a person to refund a perfectly good payment.
            _move_order(
                locked,
                to=OrderStatus.PAYMENT_PENDING,
                actor=actor,
                reason=_("A payment attempt was started."),
                data={"attempt_id": attempt.pk},
            )
    return attempt


# --- staff resolutions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkPaidResult:
    order: Order
    approval: "PaymentApproval | None" = None  # set when a second person must approve first

    @property
    def applied(self) -> bool:
        return self.approval is None


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed(_("Give a reason: it is kept on the order's timeline."))
    return reason


def add_staff_note(*, order: Order | int, text: str, actor: Actor) -> OrderEvent:
    """Append a staff note to the order's timeline (notes are never edited)."""
    text = (text or "").strip()
    if not text:
        raise ValidationFailed(_("A note cannot be empty."))
    if len(text) > 5000:
        raise ValidationFailed(_("A note is at most 5,000 characters."))
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        return _record_event(order=locked, kind=Kind.NOTE, actor=actor, message=text)


def assign_order(*, order: Order | int, assignee, actor: Actor) -> Order:
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        if locked.assignee_id == getattr(assignee, "pk", None):
            return locked
        previous = locked.assignee_id
        locked.assignee = assignee
        locked.save(update_fields=["assignee", "updated_at"])
        _record_event(
            order=locked, kind=Kind.ASSIGNED, actor=actor,
            message=(_("Assigned to %(user)s.") % {"user": assignee.get_username()}) if assignee else _("Unassigned."),
            data={"assignee_id": getattr(assignee, "pk", None), "previous_assignee_id": previous},
        )
    return locked


def request_mark_paid(
    *, order: Order | int, provider_reference: str, reason: str, actor: Actor, provider: str = ""
) -> MarkPaidResult:
    """A person says the customer paid: apply it, or, above the merchant's limit, ask a second
    staff member to approve first."""
    reason = _require_reason(reason)
    provider_reference = (provider_reference or "").strip()
    if not provider_reference:
        raise ValidationFailed(_("Give the provider's reference of the payment as evidence."))
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        provider = provider or _provider_for(locked, provider_reference)
        _check_can_mark_paid(locked, provider, provider_reference)
        limit = locked.merchant.mark_paid_approval_above
        if limit is not None and locked.amount > limit:
            if locked.approvals.filter(status=PaymentApproval.Status.PENDING).exists():
                raise ValidationFailed(_("A mark-paid request for this order is already waiting for approval."))
            approval = PaymentApproval.objects.create(
                order=locked, provider=provider, provider_reference=provider_reference, amount=locked.amount,
                currency=locked.currency, reason=reason, requested_by=actor.user,
            )
            _record_event(
                order=locked, kind=Kind.APPROVAL_REQUESTED, actor=actor,
                message=_("Mark paid with %(provider)s payment %(reference)s, above %(limit)s %(currency)s: waiting "
                          "for a second staff member. Reason: %(reason)s")
                % {"provider": provider, "reference": provider_reference, "limit": limit,
                   "currency": locked.currency, "reason": reason},
                data={"approval_id": approval.pk, "provider_reference": provider_reference},
            )
            return MarkPaidResult(locked, approval)
        _apply_mark_paid(locked, provider=provider, provider_reference=provider_reference, reason=reason, actor=actor)
    return MarkPaidResult(locked)


def decide_mark_paid(*, approval: "PaymentApproval | int", approve: bool, actor: Actor, note: str = "") -> "PaymentApproval":
    """The second pair of eyes: approve (the order is marked paid) or reject a request."""
    approval_id = approval if isinstance(approval, int) else approval.pk
    with transaction.atomic():
        order_id = PaymentApproval.objects.values_list("order_id", flat=True).get(pk=approval_id)
        locked = _lock_order(order_id)
        current = PaymentApproval.objects.select_for_update().get(pk=approval_id)
        if current.status != PaymentApproval.Status.PENDING:
            raise ValidationFailed(_("This request was already %(status)s.") % {"status": current.get_status_display()})
        if actor.user_id is None or actor.user_id == current.requested_by_id:
            raise ValidationFailed(_("You asked for this; another staff member must decide it."))
        if not approve and not (note or "").strip():
            raise ValidationFailed(_("Say why you reject the request."))
        if approve:
            _apply_mark_paid(locked, provider=current.provider, provider_reference=current.provider_reference,
                             reason=current.reason, actor=actor, approval=current)
        current.status = PaymentApproval.Status.APPROVED if approve else PaymentApproval.Status.REJECTED
        current.decided_by, current.decided_at, current.decision_note = actor.user, timezone.now(), (note or "").strip()
        current.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
        _record_event(
            order=locked, kind=Kind.APPROVAL_DECIDED, actor=actor,
            message=(_("Mark-paid request approved.") if approve else _("Mark-paid request rejected: %(note)s")
                     % {"note": current.decision_note}),
            data={"approval_id": current.pk, "approved": approve, "requested_by": current.requested_by_id},
        )
    return current


def _provider_for(order: Order, provider_reference: str) -> str:
    known = order.attempts.filter(provider_reference=provider_reference).values_list("provider", flat=True).first()
    if known:
        return known
    # A reference recorded for another order names its provider as well, so the check that
    # follows refuses it; guessing this order's provider (or "manual") instead would record the
    # same payment a second time, as evidence for a second order.
    elsewhere = PaymentAttempt.objects.filter(provider_reference=provider_reference).values_list(
        "provider", flat=True).first()
    if elsewhere:
        return elsewhere
    latest = order.attempts.order_by("-created_at", "-id").values_list("provider", flat=True).first()
    return latest or "manual"


def _check_can_mark_paid(order: Order, provider: str, provider_reference: str) -> None:
    if order.status not in (OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, OrderStatus.PAYMENT_FAILED):
        raise IllegalTransition(
            _("Order %(reference)s is %(status)s; only an unpaid order can be marked paid.")
            % {"reference": order.reference, "status": OrderStatus(order.status).label}
        )
    attempt = PaymentAttempt.objects.filter(provider=provider, provider_reference=provider_reference).first()
    if attempt is not None and attempt.order_id != order.pk:
        raise Conflict(_("Payment %(reference)s belongs to another order.") % {"reference": provider_reference},
                       code="payment_of_another_order")
    if attempt is not None and attempt.status in (AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CANCELLED):
        raise ValidationFailed(
            _("The provider reported payment %(reference)s as %(status)s; it cannot be marked paid by hand.")
            % {"reference": provider_reference, "status": AttemptStatus(attempt.status).label}
        )


def _apply_mark_paid(
    locked: Order, *, provider: str, provider_reference: str, reason: str, actor: Actor, approval=None
) -> None:
    _check_can_mark_paid(locked, provider, provider_reference)
    data = {"provider_reference": provider_reference, "manual": True,
            **({"approval_id": approval.pk} if approval is not None else {})}
    attempt = PaymentAttempt.objects.select_for_update().filter(
        provider=provider, provider_reference=provider_reference).first()
    if attempt is None:
        attempt = PaymentAttempt.objects.create(
            order=locked, provider=provider, provider_reference=provider_reference,
            idempotency_key=f"manual-{uuid.uuid4().hex}", amount=locked.amount, currency=locked.currency,
            status=AttemptStatus.PENDING,
        )
        _record_event(order=locked, attempt=attempt, kind=Kind.ATTEMPT_CREATED, actor=actor,
                      message=_("Payment %(reference)s recorded by hand.") % {"reference": provider_reference},
                      data={"attempt_id": attempt.pk, **data})
    if attempt.status != AttemptStatus.SUCCEEDED:
        _move_attempt(locked, attempt, to=AttemptStatus.SUCCEEDED, actor=actor, reason=reason, data=data)
    if locked.status != OrderStatus.PAYMENT_PENDING:
        _move_order(locked, to=OrderStatus.PAYMENT_PENDING, actor=actor, reason=reason, data=data)
    _move_order(locked, to=OrderStatus.PAID, actor=actor, reason=reason, data={**data, "attempt_id": attempt.pk},
                changes={"captured_amount": attempt.amount, "needs_review": False})
    order_id = locked.pk
    transaction.on_commit(lambda: _enqueue_confirmation(order_id))


def staff_mark_failed(*, order: Order | int, reason: str, actor: Actor) -> Order:
    """A person decides the payment failed: open attempts fail and the order waits for a retry."""
    reason = _require_reason(reason)
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        if locked.status != OrderStatus.PAYMENT_PENDING:
            raise IllegalTransition(
                _("Order %(reference)s is %(status)s; only an order waiting for its payment can be marked failed.")
                % {"reference": locked.reference, "status": OrderStatus(locked.status).label}
            )
        if locked.attempts.filter(status=AttemptStatus.SUCCEEDED).exists():
            raise ValidationFailed(_("A payment of this order succeeded; it cannot be marked failed."))
        for attempt in locked.attempts.select_for_update().filter(status__in=sorted(ATTEMPT_OPEN)):
            _move_attempt(locked, attempt, to=AttemptStatus.FAILED, actor=actor, reason=reason,
                          failure_code="marked_failed_by_staff", data={"manual": True})
        return _move_order(locked, to=OrderStatus.PAYMENT_FAILED, actor=actor, reason=reason,
                           data={"manual": True}, changes={"needs_review": False})


def staff_cancel_order(*, order: Order | int, reason: str, actor: Actor) -> Order:
    """Cancel an unpaid order; open attempts are cancelled with it."""
    reason = _require_reason(reason)
    order_id = order if isinstance(order, int) else order.pk
    with transaction.atomic():
        locked = _lock_order(order_id)
        if locked.attempts.filter(status=AttemptStatus.SUCCEEDED).exists():
            raise Conflict(_("Money was taken for this order: refund it instead of cancelling."), code="money_taken")
        if not order_move_allowed(locked.status, OrderStatus.CANCELLED):
            return _move_order(locked, to=OrderStatus.CANCELLED, actor=actor, reason=reason)  # raises, explained
        for attempt in locked.attempts.select_for_update().filter(status__in=sorted(ATTEMPT_OPEN)):
            _move_attempt(locked, attempt, to=AttemptStatus.CANCELLED, actor=actor, reason=reason,
                          data={"manual": True})
        return _move_order(locked, to=OrderStatus.CANCELLED, actor=actor, reason=reason, data={"manual": True})
