"""Log lines: the JSON and plain formatters, the request id from the header to the log line and
back, the engine's order reference and provider, and masking of personal data and payloads."""

from __future__ import annotations

import json
import logging

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from backoffice.monitoring.logs import (
    MASK,
    ContextFilter,
    JsonFormatter,
    MaskingFilter,
    PlainFormatter,
    is_sensitive_key,
    mask_text,
    mask_value,
)
from backoffice.monitoring.request_id import RequestIdMiddleware
from orders import log_context
from orders.models import PaymentCheck
from orders.recheck import check_attempts
from tests.orders.engine_helpers import ENGINE_ACTOR, pending_order
from tests.orders.engine_helpers import sandbox  # noqa: F401 - fixture


class Lines(logging.Handler):
    """A handler wired like the console one (context, then masking) that keeps formatted lines."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(ContextFilter())
        self.addFilter(MaskingFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines():
    handler = Lines(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def parsed(handler: Lines) -> list[dict]:
    return [json.loads(line) for line in handler.lines]


# --- the formatters -------------------------------------------------------------------------------


def test_the_json_formatter_writes_one_object_a_line_with_the_bound_context(json_lines):
    log = logging.getLogger("orders.recheck")
    with log_context.bound(request_id="req-1", order_ref="ORD-42", provider="sandbox"):
        log.warning("re-check of %s failed: %s", "attempt 7", "timeout", extra={"attempt_id": 7})

    (line,) = json_lines.lines
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "orders.recheck"
    assert entry["message"] == "re-check of attempt 7 failed: timeout"
    assert (entry["request_id"], entry["order_ref"], entry["provider"]) == ("req-1", "ORD-42", "sandbox")
    assert entry["attempt_id"] == 7
    assert entry["time"].endswith("+00:00")


def test_the_json_formatter_keeps_the_exception_on_the_same_line(json_lines):
    try:
        raise ValueError("customer wang.fang@example.com has no address")
    except ValueError:
        logging.getLogger("orders.webhooks").exception("callback failed")

    (entry,) = parsed(json_lines)
    assert "ValueError" in entry["exception"]
    assert "wang.fang@example.com" not in entry["exception"]


def test_the_plain_formatter_is_unchanged_without_context_and_adds_it_when_bound():
    handler = Lines(PlainFormatter())
    log = logging.getLogger("test.plain")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("sweep: %d orders", 3)
        with log_context.bound(order_ref="ORD-42", provider="sandbox"):
            log.info("re-checked")
    finally:
        log.removeHandler(handler)
        log.propagate = True

    plain, bound = handler.lines
    assert plain.endswith(" INFO test.plain sweep: 3 orders")
    assert bound.endswith(" INFO test.plain re-checked [order_ref=ORD-42 provider=sandbox]")


def test_extra_fields_win_over_the_bound_context(json_lines):
    with log_context.bound(provider="sandbox"):
        logging.getLogger("x").info("one", extra={"provider": "other"})

    assert parsed(json_lines)[0]["provider"] == "other"


def test_settings_pick_the_json_formatter_with_log_format_json(settings):
    from backoffice.settings import LOGGING

    assert LOGGING["handlers"]["console"]["filters"] == ["context", "mask"]
    assert LOGGING["formatters"]["json"]["()"] == "backoffice.monitoring.logs.JsonFormatter"
    assert LOGGING["handlers"]["console"]["formatter"] in {"plain", "json"}


# --- the request id ---------------------------------------------------------------------------


def _middleware(seen: list):
    def view(request):
        seen.append(dict(log_context.current()))
        logging.getLogger("backoffice.test").info("in the view")
        return HttpResponse("ok")

    return RequestIdMiddleware(view)


def test_a_sane_incoming_request_id_is_kept_logged_and_returned(json_lines):
    seen: list = []
    request = RequestFactory().get("/", HTTP_X_REQUEST_ID="lb-7f3a.2c:9")

    response = _middleware(seen)(request)

    assert response["X-Request-ID"] == "lb-7f3a.2c:9"
    assert seen == [{"request_id": "lb-7f3a.2c:9"}]
    assert parsed(json_lines)[0]["request_id"] == "lb-7f3a.2c:9"


@pytest.mark.django_db
def test_django_s_own_line_about_a_refused_request_carries_the_id_and_nothing_outlives_the_request(
    client, json_lines, settings
):
    settings.METRICS_TOKEN = "t"

    response = client.get("/metrics", HTTP_X_REQUEST_ID="req-401")

    assert response.status_code == 401
    refused = [e for e in parsed(json_lines) if e["logger"] == "django.request"]
    assert refused and refused[0]["request_id"] == "req-401"
    assert log_context.current() == {}  # nothing leaks into the next request on this thread


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "line\nbreak", "<script>", "évian", "-leading"])
def test_an_insane_request_id_is_replaced_by_a_new_one(incoming):
    seen: list = []
    request = RequestFactory().get("/")
    request.META["HTTP_X_REQUEST_ID"] = incoming

    response = _middleware(seen)(request)

    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32
    assert seen[0]["request_id"] == response["X-Request-ID"]


def test_every_response_carries_a_request_id_end_to_end(client):
    first = client.get("/healthz")
    second = client.get("/healthz", HTTP_X_REQUEST_ID="trace-abc123")

    assert len(first["X-Request-ID"]) == 32
    assert second["X-Request-ID"] == "trace-abc123"


# --- the engine's lines carry order and provider ----------------------------------------------


@pytest.mark.django_db
def test_engine_log_lines_name_the_order_and_the_provider(json_lines, monkeypatch):
    from orders import recheck

    order, attempt = pending_order(provider="sandbox")

    def broken(attempt):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(recheck, "_ask", broken)
    check_attempts([attempt.pk], source=PaymentCheck.Source.MANUAL, actor=ENGINE_ACTOR)

    entries = [e for e in parsed(json_lines) if e["logger"] == "orders.recheck"]
    assert entries, json_lines.lines
    assert entries[0]["order_ref"] == order.reference
    assert entries[0]["provider"] == "sandbox"


@pytest.mark.django_db
def test_a_failing_callback_logs_its_provider(json_lines, client, settings):
    from tests.orders.test_webhooks import deliver, payload, signed_headers

    body = payload(None, provider_reference="sbx_nobody_knows", order_reference="NOPE-1", merchant="nobody")
    deliver(client, body, signed_headers(body, secret=settings.SANDBOX_WEBHOOK_SECRET))

    entries = [e for e in parsed(json_lines) if e["logger"] == "orders.webhooks"]
    assert entries and entries[0]["provider"] == "sandbox"
    assert entries[0]["request_id"]


# --- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "hidden", "shown"), [
    ("mail wang.fang@example.com now", "wang.fang", "w***@example.com"),
    ("call +86 138 0013 8000", "138 0013", "***00"),
    ("call 13800138000.", "13800138000", "***00"),
    ("call (202) 555-0143", "555-0143", "***43"),
    ("card 4111 1111 1111 1111 declined", "4111 1111", "***1111"),
    ("card 4111111111111111", "4111111111111111", "***1111"),
])
def test_personal_data_in_text_is_masked(text, hidden, shown):
    masked = mask_text(text)

    assert hidden not in masked
    assert shown in masked


@pytest.mark.parametrize("text", [
    "sweep: 1000 orders at 2026-11-26 10:41:00 (15.20s)",
    "order ORD-00050000 attempt 1732612345678",  # 13 digits, but no card (Luhn fails)
    "evt 550e8400-e29b-41d4-a716-446655440000 from 10.0.0.7",
    "HTTP 503 after 5000 ms",
])
def test_ordinary_log_text_is_left_alone(text):
    assert mask_text(text) == text


def test_sensitive_keys_of_dict_arguments_are_masked_whole(json_lines):
    logging.getLogger("orders.webhooks").info("callback %s", {
        "body": '{"card": "4111"}', "headers": {"Authorization": "Bearer abc", "webhook-signature": "v1,xyz"},
        "status": "succeeded", "nested": [{"customer_email": "a@b.cn", "amount": "12.00"}],
    })

    message = parsed(json_lines)[0]["message"]
    assert "4111" not in message and "abc" not in message and "xyz" not in message and "a@b.cn" not in message
    assert "succeeded" in message and "12.00" in message


def test_named_arguments_and_extras_are_masked(json_lines):
    logging.getLogger("x").info("got %(payload)s for %(status)s", {"payload": "raw stuff", "status": "paid"},
                                extra={"token": "t0ps3cret", "customer": {"phone": "+86 138 0013 8000"}})

    (entry,) = parsed(json_lines)
    assert entry["message"] == f"got {MASK} for paid"
    assert entry["token"] == MASK
    assert entry["customer"] == {"phone": MASK}


@pytest.mark.parametrize("key", ["body", "Authorization", "webhook-signature", "card_number", "client_secret",
                                 "status_token", "customer_email", "customer_phone", "shipping_address", "payload",
                                 "password", "response_excerpt", "raw"])
def test_sensitive_keys(key):
    assert is_sensitive_key(key)


@pytest.mark.parametrize("key", ["status", "amount", "provider", "order_ref", "attempt_id", "kind"])
def test_ordinary_keys(key):
    assert not is_sensitive_key(key)


def test_mask_value_copies_and_never_changes_the_callers_data():
    data = {"body": "x", "items": ["a@b.cn"]}

    masked = mask_value(data)

    assert masked == {"body": MASK, "items": ["a***@b.cn"]}
    assert data == {"body": "x", "items": ["a@b.cn"]}

