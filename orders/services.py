"""The single write path for orders and payment attempts.

Every change of `Order.status` or `PaymentAttempt.status` happens here: the row is locked,
the move is checked against `orders.states`, only changed fields are saved, one
`OrderEvent` records actor and reason, and `order_state_changed` is sent after commit.
Admin actions, API views, merchant pages, tasks and commands all call these functions.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from orders.actors import Actor
from orders.currencies import MINOR_UNITS, is_currency
from orders.exceptions import DomainError, IllegalTransition, ValidationFailed
from orders.models import Merchant, Order, OrderEvent, PaymentAttempt
from orders.signals import order_state_changed
from orders.states import (
    ATTEMPT_FINAL,
    ORDER_TERMINAL,
    ORDER_TRANSITIONS,
    AttemptStatus,
    OrderStatus,
    attempt_move_allowed,
    order_move_allowed,
)

Kind = OrderEvent.Kind


class DuplicateReference(DomainError):
    code = "duplicate_reference"

    def __init__(self, message: str, *, existing_id: int) -> None:
        super().__init__(message)
        self.existing_id = existing_id


# --- helpers shared by the services below -------------------------------------------------


def _record_event(
    *,
    order: Order,
    kind: str,
    actor: Actor,
    message: str = "",
    data: dict[str, Any] | None = None,
    attempt: PaymentAttempt | None = None,
) -> OrderEvent:
    payload = dict(data or {})
    if actor.label:
        payload.setdefault("actor_label", actor.label)
    return OrderEvent.objects.create(
        order=order,
        attempt=attempt,
        kind=kind,
        actor_kind=actor.kind,
        actor_user_id=actor.user_id,
        message=message,
        data=payload,
    )


def _lock_order(order_id: int) -> Order:
    return Order.objects.select_for_update().select_related("merchant").get(pk=order_id)


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


def _check_money(amount: Decimal, currency: str) -> None:
    if not is_currency(currency):
        raise ValidationFailed(_("“%(currency)s” is not an ISO 4217 currency code.") % {"currency": currency})
    if amount <= 0:
        raise ValidationFailed(_("The amount must be greater than zero."))
    places = MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ValidationFailed(
            _("%(currency)s amounts have at most %(places)d decimal places.") % {"currency": currency, "places": places}
        )


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
    if not merchant.active:
        raise ValidationFailed(_("Merchant %(code)s is inactive and cannot take orders.") % {"code": merchant.code})
    _check_money(amount, currency)
    now = submitted_at or timezone.now()
    try:
        with transaction.atomic():
            order = Order.objects.create(
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
            )
            _record_event(
                order=order,
                kind=Kind.CREATED,
                actor=actor,
                message=_("Order submitted."),
                data={"amount": str(amount), "currency": currency},
            )
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
    fields = {"status": to, "status_changed_at": now, **(changes or {})}
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
        order_id = PaymentAttempt.objects.values_list("order_id", flat=True).get(pk=attempt_id)
        locked = _lock_order(order_id)
        current_attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
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
            raise ValidationFailed(
                _("A payment attempt with this idempotency key or provider reference already exists.")
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
        order_id = PaymentAttempt.objects.values_list("order_id", flat=True).get(pk=attempt_id)
        locked_order = _lock_order(order_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
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
        try:
            with transaction.atomic():
                locked.save(update_fields=changed)
        except IntegrityError:
            raise ValidationFailed(
                _("Provider reference %(reference)s is already used by another attempt.")
                % {"reference": provider_reference}
            ) from None
        _record_event(
            order=locked_order,
            attempt=locked,
            kind=Kind.ATTEMPT_STATUS_CHANGED,
            actor=actor,
            message=reason,
            data={"attempt_id": locked.pk, "from": current, "to": to, **(data or {})},
        )
    return locked
