"""`Idempotency-Key` for API writes, the way payment APIs do it (docs/api-idempotency.md).

A client that may retry a POST (a timeout, a dropped connection) sends a key of its choosing. The first
request with that key runs and its response is kept; a retry with the same key and the same request gets
that response again (`Idempotent-Replayed: true`) instead of a second order. Keys belong to the
authenticated user, and are forgotten after `IDEMPOTENCY_KEY_TTL_HOURS` (24 by default).

Usage: put the mixin first in the bases of every DRF view or viewset with POST endpoints:

    class OrderViewSet(IdempotentMixin, viewsets.ModelViewSet): ...
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from orders import statements
from orders.api.errors import error_body
from orders.models import IdempotencyKey

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
PURGE_BATCH = 5000


def key_ttl() -> timedelta:
    return timedelta(hours=getattr(settings, "IDEMPOTENCY_KEY_TTL_HOURS", 24))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # The project's API error shape, answered here so a key error never depends on the view's
    # exception handler.
    return Response(error_body(code, message), status=status, headers=headers)


class _Answered(Exception):
    """Raised from `initial()` to answer without running the handler (replay or key error)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def request_fingerprint(request) -> str:
    """sha256 of method, path (with query string) and the body. A JSON body is canonicalised first,
    so key order and whitespace do not make a retry a "different request"."""
    django_request = getattr(request, "_request", request)
    body = django_request.body
    content_type = (django_request.content_type or "").lower()
    if body and (content_type == "application/json" or content_type.endswith("+json")):
        try:
            body = json.dumps(
                json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
        except ValueError:
            pass  # not valid JSON: fingerprint the bytes; the view answers 400 anyway.
    digest = hashlib.sha256()
    for part in (django_request.method.encode(), django_request.get_full_path().encode("utf-8"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotentMixin:
    """Honour `Idempotency-Key` on POST and PATCH. Must come before the DRF view class in the bases.

    No header: the request runs as usual. Anonymous requests are never deduplicated (keys are scoped
    per user); authentication, permissions and throttling run before the key is looked at, so a
    refused request leaves no key behind.
    """

    idempotent_methods: tuple[str, ...] = ("POST", "PATCH")
    # Response headers kept and replayed along with status and body.
    idempotency_stored_headers: tuple[str, ...] = ("Location", "Content-Location")
    # 4xx answers that may change on a retry: not kept, the key is released so the client can retry.
    idempotency_retryable_statuses: frozenset[int] = frozenset({408, 409, 423, 425, 429})

    _idempotency_row: IdempotencyKey | None = None

    # --- DRF hooks ------------------------------------------------------------------------------

    def initial(self, request, *args, **kwargs):
        self._idempotency_row = None
        key = request.headers.get(HEADER) if request.method in self.idempotent_methods else None
        if key is not None and (request.content_type or "").lower().startswith("multipart/"):
            # Read (and cache) the raw body first: session authentication's CSRF check may parse a
            # multipart body, after which Django no longer has the raw bytes to fingerprint.
            self._fingerprint_body(request)
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles
        if key is None:
            return
        if not key.strip() or len(key) > KEY_MAX_LENGTH:
            raise _Answered(_error(
                400, "idempotency_key_invalid",
                _("The Idempotency-Key header must be 1 to %(limit)d characters long.") % {"limit": KEY_MAX_LENGTH},
            ))
        user = request.user
        if not getattr(user, "is_authenticated", False):
            return
        self._idempotency_row = self._claim_key(request, owner_id=user.pk, key=key)

    def handle_exception(self, exc):
        if isinstance(exc, _Answered):
            return exc.response
        try:
            return super().handle_exception(exc)
        except BaseException:
            # Not an answer the client can rely on: forget the key, a retry runs again.
            self._release_key()
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self._idempotency_row is not None:
            try:
                self._store_response(response)
            finally:
                self._idempotency_row = None
        return response

    # --- the key's life -------------------------------------------------------------------------

    def _fingerprint_body(self, request) -> None:
        try:
            request._request.body  # noqa: B018 - read once, cached by Django
        except RequestDataTooBig:
            raise _Answered(_error(
                413, "body_too_large",
                _("The request body is too large to be used with an Idempotency-Key."),
            )) from None

    def _claim_key(self, request, *, owner_id: int, key: str) -> IdempotencyKey:
        """Insert the key, or answer from the row another request with this key inserted."""
        self._fingerprint_body(request)
        fingerprint = request_fingerprint(request)
        for _attempt in range(3):
            try:
                # Committed at once, so concurrent requests see it (and wait on the unique index for
                # it) while this one runs the view: one autocommitted INSERT, no BEGIN and COMMIT
                # round trips; a savepoint only inside a caller's transaction, which a duplicate
                # key must not break. `statements.insert`: the ORM's insert without its compile.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    return statements.insert(IdempotencyKey(
                        owner_id=owner_id,
                        key=key,
                        method=request.method,
                        path=request.get_full_path()[:2000],
                        request_fingerprint=fingerprint,
                    ))
            except IntegrityError:
                existing = IdempotencyKey.objects.filter(owner_id=owner_id, key=key).first()
            if existing is None:
                continue  # released or purged meanwhile: try again
            if existing.created_at <= timezone.now() - key_ttl():
                # Expired: a new request. Delete exactly that row (a racing request may do the same).
                IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
                continue
            raise _Answered(self._answer_from(existing, fingerprint))
        raise _Answered(self._in_progress())

    def _answer_from(self, existing: IdempotencyKey, fingerprint: str) -> Response:
        if existing.request_fingerprint != fingerprint:
            return _error(422, "idempotency_key_reused",
                          _("This Idempotency-Key was used with a different request."))
        if existing.status != IdempotencyKey.Status.DONE:
            return self._in_progress()
        data = json.loads(existing.response_body) if existing.response_body else None
        headers = {**existing.response_headers, REPLAYED_HEADER: "true"}
        return Response(data, status=existing.response_status, headers=headers)

    def _in_progress(self) -> Response:
        return _error(409, "idempotency_key_in_progress",
                      _("A request with this Idempotency-Key is still being processed."),
                      headers={"Retry-After": "1"})

    def _store_response(self, response) -> None:
        row = self._idempotency_row
        status = response.status_code
        keep = 200 <= status < 300 or (400 <= status < 500 and status not in self.idempotency_retryable_statuses)
        if not keep or not hasattr(response, "data"):
            # 5xx, a retryable 4xx, or a plain Django response we cannot replay faithfully.
            self._release_key()
            return
        body = "" if response.data is None else json.dumps(response.data, cls=JSONEncoder, ensure_ascii=False)
        headers = {name: response[name] for name in self.idempotency_stored_headers if response.has_header(name)}
        try:
            statements.update(
                IdempotencyKey, row.pk,
                status=IdempotencyKey.Status.DONE,
                response_status=status,
                response_body=body,
                response_headers=headers,
                completed_at=timezone.now(),
            )
        except Exception:
            # Left "in progress", the key would answer 409 until it expires: release it instead.
            logger.exception("could not store the response for idempotency key %s", row.pk)
            self._release_key()

    def _release_key(self) -> None:
        row, self._idempotency_row = self._idempotency_row, None
        if row is not None:
            IdempotencyKey.objects.filter(pk=row.pk).delete()


def purge_expired_keys(*, batch_size: int = PURGE_BATCH) -> int:
    """Delete keys older than the TTL, a batch at a time so no delete holds locks for long."""
    cutoff = timezone.now() - key_ttl()
    deleted = 0
    while True:
        batch = list(
            IdempotencyKey.objects.filter(created_at__lt=cutoff).order_by().values_list("pk", flat=True)[:batch_size]
        )
        if not batch:
            return deleted
        deleted += IdempotencyKey.objects.filter(pk__in=batch).delete()[0]
