"""The project's one JSON error shape, for the API and the webhooks alike:

    {"error": {"code": "...", "message": "...", "fields": {"name": ["...", ...]}}}

`code` is stable and meant for programs; `message` is for people, in the request's language.
Some errors add keys next to "error" (a duplicate reference adds "existing_id").
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from orders.exceptions import Conflict, DomainError, IllegalTransition

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(_("The request body is larger than %(limit)d KiB.") % {"limit": limit // 1024},
                         self.default_code)


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    return {"error": {"code": code, "message": str(message), "fields": fields or {}}, **extra}


def error_response(status: int, code: str, message: str, *, fields: dict | None = None, **extra) -> JsonResponse:
    """The error shape as a plain Django response (views outside DRF: webhooks, unknown API paths)."""
    return JsonResponse(error_body(code, message, fields, **extra), status=status)


def _messages(detail) -> list[str]:
    if isinstance(detail, dict):
        return [m for value in detail.values() for m in _messages(value)]
    if isinstance(detail, list):
        return [m for value in detail for m in _messages(value)]
    return [str(detail)]


def _fields(detail) -> dict:
    """A validation error's detail as {field: [messages]}; nested serializers as "a.b" names."""
    fields: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
            for index, inner in enumerate(value):
                walk(f"{prefix}.{index}" if prefix else str(index), inner)
        else:
            fields.setdefault(prefix or "non_field_errors", []).extend(_messages(value))

    walk("", detail)
    return fields


def _first_code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    while isinstance(codes, (list, dict)) and codes:
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return codes if isinstance(codes, str) and codes else exc.default_code


def _domain_status(exc: DomainError) -> int:
    # 409: the request is fine but the order's state (or an existing row) refuses it.
    if isinstance(exc, (IllegalTransition, Conflict)) or hasattr(exc, "existing_id"):
        return status.HTTP_409_CONFLICT
    return status.HTTP_400_BAD_REQUEST


def exception_handler(exc, context) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every error the API answers has the one shape."""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        extra = {"existing_id": exc.existing_id} if hasattr(exc, "existing_id") else {}
        fields = {exc.field: [exc.message]} if getattr(exc, "field", "") else None
        return Response(error_body(exc.code, exc.message, fields, **extra), status=_domain_status(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django answers 500 (JSON under /api/, see server_error)

    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, exceptions.ValidationError):
        fields = _fields(exc.detail)
        only_general = set(fields) == {"non_field_errors"}
        message = (fields["non_field_errors"][0] if only_general
                   else _("The request is not valid; see the fields for details."))
        body = error_body(_first_code(exc) if only_general else "invalid", message,
                          {} if only_general else fields)
    elif isinstance(exc, exceptions.Throttled):
        body = error_body("throttled", _("Too many requests; try again in %(seconds)d seconds.")
                          % {"seconds": int(exc.wait or 1)})
    elif isinstance(exc, exceptions.NotFound):
        body = error_body("not_found", _("Not found."))
    else:
        body = error_body(_first_code(exc), " ".join(_messages(exc.detail)))
    return Response(body, status=exc.status_code, headers=headers)


# --- Plain Django handlers: JSON under /api/, the usual pages elsewhere -----------------------


@csrf_exempt  # it changes nothing; without this a POST with a token got the HTML CSRF page, not this
def api_not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    return error_response(404, "not_found", _("There is no API endpoint at this address."))


def not_found(request: HttpRequest, exception=None):
    if request.path.startswith(API_PREFIX):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest):
    if request.path.startswith(API_PREFIX):
        return error_response(500, "server_error", _("Something went wrong on our side; it was logged."))
    return defaults.server_error(request)
