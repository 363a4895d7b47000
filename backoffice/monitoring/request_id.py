"""A request id for every web request: taken from `X-Request-ID` when a proxy or client sent a
sane one, made up otherwise; bound for every log line of the request and sent back in the
response's `X-Request-ID`, so a complaint, a proxy log and our log lines can be matched."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.core.signals import request_finished, request_started
from django.http import HttpRequest, HttpResponse

from orders import log_context

HEADER = "X-Request-ID"
# Letters, digits and . _ : - only, at most 128: nothing that could forge a log line or a header.
SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


def request_id_from(request: HttpRequest) -> str:
    incoming = request.headers.get(HEADER, "")
    return incoming if SANE.fullmatch(incoming) else uuid.uuid4().hex


class RequestIdMiddleware:
    """First in `MIDDLEWARE`, so every other middleware's log lines carry the id too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = request_id_from(request)
        # Stays bound after the response leaves the middleware: Django logs a 4xx or 5xx
        # response ("Unauthorized: /metrics") only then. The request's end clears it (below).
        log_context.clear()
        log_context.push(request_id=request.request_id)
        response = self.get_response(request)
        response[HEADER] = request.request_id
        return response


def _forget_request(**kwargs) -> None:
    log_context.clear()


# A worker thread serves one request after another: nothing bound for one may reach the next.
request_started.connect(_forget_request, dispatch_uid="backoffice.request_id.started")
request_finished.connect(_forget_request, dispatch_uid="backoffice.request_id.finished")
