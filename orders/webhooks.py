"""Provider callbacks at POST /webhooks/<provider>/ (Standard Webhooks).

The raw request is journaled before anything else; `(provider, webhook-id)` is unique, so
a redelivery answers 200 and changes nothing. A callback whose signature or timestamp
fails is answered 400 and kept as a hint only: it triggers a re-check of the attempt it
names instead of being applied. Processing marks the callback processed only after the
result was applied; a failure stays in the journal for `replay_callbacks`.
"""

from __future__ import annotations

import logging
import uuid

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from orders import log_context, ratelimit, telemetry
from orders.actors import Actor
from orders.api.errors import error_response
from orders.models import Order, PaymentAttempt, PaymentCheck, ProviderCallback
from orders.providers.base import CallbackEvent, MalformedCallback, PaymentProvider, SignatureInvalid
from orders.providers.registry import UnknownProvider, get_provider
from orders.providers.signing import HEADER_ID, reason_message
from orders.services import adopt_provider_payment, apply_provider_result, record_check

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MASKED_HEADERS = frozenset({"webhook-signature", "authorization", "cookie", "proxy-authorization"})
# Invalid signatures allowed per provider and client address per minute before we answer 429.
BAD_SIGNATURE_LIMIT = 30

Outcome = ProviderCallback.Outcome


def _masked_headers(request: HttpRequest) -> dict[str, str]:
    return {
        name.lower(): ("***" if name.lower() in MASKED_HEADERS else value[:500])
        for name, value in request.headers.items()
    }


def _journal(provider: str, event_id: str, headers: dict[str, str], body: str) -> tuple[ProviderCallback, bool]:
    try:
        with transaction.atomic():
            return ProviderCallback.objects.create(provider=provider, event_id=event_id, headers=headers, body=body), True
    except IntegrityError:
        return ProviderCallback.objects.get(provider=provider, event_id=event_id), False


def _too_many_bad_signatures(provider: str, request: HttpRequest) -> bool:
    """Count a bad signature from this address; True once it sent `BAD_SIGNATURE_LIMIT` in the
    current minute."""
    key = f"webhook-bad-signature:{provider}:{ratelimit.client_ip(request)}"
    return ratelimit.take([(key, BAD_SIGNATURE_LIMIT)], window_seconds=60) is not None


def _count(callback: ProviderCallback, *, signature_valid: bool | None = None, outcome: str | None = None,
           checks: list | None = None) -> None:
    """One delivery in the metrics (and the check it produced), in one statement after commit.
    The signature is this delivery's (by default the journaled callback's)."""
    valid = callback.signature_valid if signature_valid is None else signature_valid
    telemetry.add_many([
        telemetry.Increment(telemetry.CALLBACKS, {
            "provider": callback.provider,
            "signature": "valid" if valid else "invalid",
            "outcome": outcome or callback.outcome,
        }),
        *(checks or []),
    ])


@csrf_exempt
def provider_webhook(request: HttpRequest, provider: str) -> JsonResponse:
    with log_context.bound(provider=provider):
        return _receive(request, provider)


def _receive(request: HttpRequest, provider: str) -> JsonResponse:
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", _("Callbacks are delivered with POST."))
        response["Allow"] = "POST"
        return response
    try:
        adapter = get_provider(provider)
    except UnknownProvider:
        return error_response(404, "unknown_provider", _("No payment provider is configured under this name."))
    try:
        declared_length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return error_response(400, "bad_content_length", _("The Content-Length header is not a number."))
    if declared_length > MAX_BODY_BYTES:
        return error_response(413, "body_too_large", _("The callback body is larger than 256 KiB."))
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return error_response(413, "body_too_large", _("The callback body is larger than 256 KiB."))
    headers = {name.lower(): value for name, value in request.headers.items()}
    event_id = (headers.get(HEADER_ID) or "").strip()[:128] or f"missing-id-{uuid.uuid4().hex}"
    text = body.decode("utf-8", errors="replace")
    callback, created = _journal(provider, event_id, _masked_headers(request), text)

    if not created and callback.processed_at is not None and callback.signature_valid:
        # A redelivery of a callback we already applied: answer as before, change nothing.
        _count(callback, outcome="duplicate")
        return JsonResponse({"status": "duplicate", "outcome": callback.outcome})

    try:
        adapter.verify_callback(headers, body)
    except SignatureInvalid as exc:
        if not created and callback.signature_valid:
            # Someone replays a known id with another body: keep the genuine journal entry.
            _count(callback, signature_valid=False, outcome=Outcome.REJECTED)
            return error_response(400, "invalid_signature", str(reason_message(exc.reason)))
        limited = _too_many_bad_signatures(provider, request)
        _treat_as_hint(callback, adapter, headers, body, reason=exc.reason, enqueue=not limited)
        _count(callback)
        if limited:
            return error_response(429, "too_many_invalid_signatures",
                                  _("Too many callbacks with invalid signatures; slow down."))
        return error_response(400, "invalid_signature", str(reason_message(exc.reason)))

    if not created:
        # An earlier delivery under this id failed verification; the genuine one replaces it.
        callback.headers, callback.body = _masked_headers(request), text
    callback.signature_valid = True
    callback.save(update_fields=["headers", "body", "signature_valid"])
    checks: list[telemetry.Increment] = []
    processed = process_callback(callback, adapter=adapter, raw_headers=headers, counted=checks)
    _count(callback, checks=checks)
    if processed:
        return JsonResponse({"status": "processed", "outcome": callback.outcome})
    return error_response(500, "processing_failed", _("The callback was recorded but could not be processed; "
                                                      "it will be replayed."))


def _find_attempt(provider: str, event: CallbackEvent, *, adopt: bool) -> PaymentAttempt | None:
    result = event.result
    # The order comes along for its reference, which every later log line of the callback names.
    attempts = PaymentAttempt.objects.select_related("order")
    attempt = attempts.filter(provider=provider, provider_reference=result.provider_reference).first()
    if attempt is None and result.idempotency_key:
        # Our attempt whose create timed out: it has no provider reference yet, but the
        # provider echoes its idempotency key. Adopting the payment as a second attempt
        # instead would later collide with this one and report a duplicate payment.
        attempt = attempts.filter(
            provider=provider, idempotency_key=result.idempotency_key, provider_reference=""
        ).first()
    if attempt is not None or not adopt or not (result.order_reference and result.merchant):
        return attempt
    order = Order.objects.filter(reference=result.order_reference, merchant__code=result.merchant).first()
    if order is None:
        return None
    return adopt_provider_payment(order=order, provider=provider, result=result, actor=Actor.provider(provider))


def _treat_as_hint(callback, adapter: PaymentProvider, headers, body: bytes, *, reason: str, enqueue: bool) -> None:
    callback.signature_valid = False
    callback.error = reason
    callback.outcome = Outcome.REJECTED
    try:
        event = adapter.parse_callback(headers, body)
        attempt = _find_attempt(callback.provider, event, adopt=False)
    except MalformedCallback:
        attempt = None
    if attempt is not None:
        log_context.push(order_ref=attempt.order.reference)  # the request's context ends with it
        callback.attempt = attempt
        if enqueue:
            callback.outcome = Outcome.RECHECK
            attempt_id = attempt.pk
            transaction.on_commit(lambda: _enqueue_recheck(attempt_id))
    callback.processed_at = timezone.now()
    callback.save(update_fields=["signature_valid", "error", "outcome", "attempt", "processed_at"])


def _enqueue_recheck(attempt_id: int) -> None:
    from django_q.tasks import async_task

    async_task("orders.tasks.recheck_attempt", attempt_id, PaymentCheck.Source.CALLBACK,
               task_name=f"recheck-attempt-{attempt_id}")


def process_callback(
    callback: ProviderCallback,
    *,
    adapter: PaymentProvider | None = None,
    raw_headers: dict | None = None,
    counted: list | None = None,
) -> bool:
    """Apply one verified, journaled callback. Returns False (and records why) on failure.

    The check it journals is counted in the metrics: added to `counted` when given (the caller
    writes it with its own increments), else written here."""
    with log_context.bound(provider=callback.provider):
        return _process_callback(callback, adapter=adapter, raw_headers=raw_headers,
                                 counted=counted if counted is not None else [], flush=counted is None)


def _process_callback(callback, *, adapter, raw_headers, counted: list, flush: bool) -> bool:
    adapter = adapter or get_provider(callback.provider)
    token = None
    try:
        if callback.body_pruned_at is not None:
            raise LookupError(_("The callback's body was pruned by the retention policy; it cannot be applied again."))
        event = adapter.parse_callback(raw_headers or callback.headers, callback.body.encode("utf-8"))
        attempt = _find_attempt(callback.provider, event, adopt=True)
        if attempt is None:
            raise LookupError(_("No payment attempt or order matches provider reference %(reference)s.")
                              % {"reference": event.result.provider_reference})
        token = log_context.push(order_ref=attempt.order.reference)
        # The callback is journaled as a check too, so the diagnosis sees every answer in one place.
        record_check(attempt=attempt.pk, source=PaymentCheck.Source.CALLBACK, result=event.result)
        counted.extend(telemetry.check_increments([
            (callback.provider, PaymentCheck.Source.CALLBACK, event.result.status, False,
             None if event.result.latency_ms is None else event.result.latency_ms / 1000),
        ]))
        with transaction.atomic():
            outcome = apply_provider_result(
                attempt=attempt.pk, result=event.result, source=PaymentCheck.Source.CALLBACK,
                actor=Actor.provider(callback.provider), has_callback=True,
            )
            callback.attempt = attempt
            callback.outcome = Outcome.APPLIED if outcome.changed else Outcome.NO_CHANGE
            callback.error = ""
            callback.processed_at = timezone.now()
            callback.save(update_fields=["attempt", "outcome", "error", "processed_at"])
        return True
    except Exception as exc:  # noqa: BLE001 - the journal keeps any failure for replay
        log.warning("callback %s:%s failed: %s", callback.provider, callback.event_id, exc)
        callback.outcome = Outcome.FAILED
        callback.error = str(exc)[:2000]
        callback.save(update_fields=["outcome", "error"])
        return False
    finally:
        if token is not None:
            log_context.pop(token)
        if flush:
            telemetry.add_many(counted)
