"""The HTTP adapter against the sandbox over real loopback HTTP: results are normalized and
every failure is classified the way the re-check engine expects."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orders.providers.base import PaymentProvider, ProviderError
from orders.providers.http import EXCERPT_CHARS, MAX_RESPONSE_BYTES, HttpProvider
from orders.providers.sandbox import DECLINE_CODES, SandboxServer

PAYMENT = {
    "amount": Decimal("12.34"),
    "currency": "CNY",
    "order_reference": "ORD-1001",
    "merchant": "acme",
}


def create(provider: HttpProvider, key: str = "att-1", **overrides: object):
    return provider.create_payment(idempotency_key=key, **(PAYMENT | overrides))  # type: ignore[arg-type]


def error_of(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def test_adapter_fulfils_the_protocol(make_provider) -> None:
    assert isinstance(make_provider("http://127.0.0.1:1"), PaymentProvider)


def test_create_then_query_happy_path(start_sandbox, make_provider) -> None:
    sandbox = start_sandbox(pending_seconds=0)
    provider = make_provider(sandbox.url)

    created = create(provider)
    assert created.status == "pending"
    assert created.provider_reference.startswith("sbx_")
    assert created.amount == Decimal("12.34")
    assert created.currency == "CNY"
    assert created.order_reference == "ORD-1001"
    assert created.merchant == "acme"
    assert created.http_status == 201
    assert created.latency_ms is not None and created.latency_ms >= 0

    result = provider.query(created.provider_reference)
    assert result.status == "succeeded"
    assert result.provider_reference == created.provider_reference
    assert result.amount == Decimal("12.34")
    assert result.failure_code == ""
    assert result.http_status == 200
    assert result.raw["status"] == "succeeded"


def test_create_is_idempotent_on_the_key(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox().url)
    first = create(provider, "att-same")
    again = create(provider, "att-same")
    assert again.provider_reference == first.provider_reference
    assert again.http_status == 200
    # The same key with other parameters is a client bug the provider refuses.
    conflict = error_of(lambda: create(provider, "att-same", amount=Decimal("1.00")))
    assert (conflict.kind, conflict.http_status) == ("http_error", 409)


def test_pending_until_pending_seconds_elapse(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(pending_seconds=30).url)
    created = create(provider)
    assert provider.query(created.provider_reference).status == "pending"


def test_decline_maps_to_failed_with_code(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(pending_seconds=0, decline_rate=1).url)
    result = provider.query(create(provider).provider_reference)
    assert result.status == "failed"
    assert result.failure_code in DECLINE_CODES


def test_expired_outcome(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(pending_seconds=0, expire_rate=1).url)
    assert provider.query(create(provider).provider_reference).status == "expired"


def test_action_required_is_reported_while_pending(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(pending_seconds=30, action_required_rate=1).url)
    result = provider.query(create(provider).provider_reference)
    assert (result.status, result.action_required) == ("pending", "3ds")


def test_amount_mismatch_is_visible(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(pending_seconds=0, amount_mismatch_rate=1).url)
    created = create(provider)
    assert created.amount == Decimal("13.34")
    assert provider.query(created.provider_reference).amount == Decimal("13.34")


def test_timeout_is_classified_and_the_create_still_happened(start_sandbox, make_provider) -> None:
    sandbox = start_sandbox(timeout_rate=1, hang_seconds=3)
    provider = make_provider(sandbox.url, read_timeout=0.3)

    error = error_of(lambda: create(provider, "att-timeout"))
    assert error.kind == "timeout"
    assert error.http_status is None
    assert 250 <= (error.latency_ms or 0) < 2000

    # The provider did create it: the same idempotency key settles the unknown outcome.
    sandbox.set_knobs(timeout_rate=0)
    replay = create(provider, "att-timeout")
    assert replay.http_status == 200


def test_query_timeout(start_sandbox, make_provider) -> None:
    sandbox = start_sandbox()
    provider = make_provider(sandbox.url, read_timeout=0.3)
    reference = create(provider).provider_reference
    sandbox.set_knobs(timeout_rate=1, hang_seconds=3)
    assert error_of(lambda: provider.query(reference)).kind == "timeout"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection(make_provider) -> None:
    provider = make_provider(f"http://127.0.0.1:{closed_port()}")
    assert error_of(lambda: provider.query("sbx_anything")).kind == "connection"
    assert error_of(lambda: create(provider)).kind == "connection"


def test_server_error(start_sandbox, make_provider) -> None:
    sandbox = start_sandbox(error_rate=1)
    provider = make_provider(sandbox.url)
    error = error_of(lambda: create(provider))
    assert error.kind == "http_error"
    assert error.http_status in (500, 503)
    assert "simulated failure" in error.excerpt
    # Refused before processing: nothing was created.
    assert sandbox.sandbox.control()["stats"]["payments"] == 0


def test_malformed_json(start_sandbox, make_provider) -> None:
    sandbox = start_sandbox()
    provider = make_provider(sandbox.url)
    reference = create(provider).provider_reference
    sandbox.set_knobs(malformed_rate=1)
    error = error_of(lambda: provider.query(reference))
    assert error.kind == "malformed"
    assert error.http_status == 200
    assert "sbx_cut" in error.excerpt


def test_unknown_reference_is_not_found(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox().url)
    error = error_of(lambda: provider.query("sbx_doesnotexist"))
    assert (error.kind, error.http_status) == ("not_found", 404)


def test_reference_cannot_escape_its_path(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox().url)
    assert error_of(lambda: provider.query("../control")).kind == "not_found"
    assert error_of(lambda: provider.query("")).kind == "not_found"


def test_latency_knob_is_measured(start_sandbox, make_provider) -> None:
    provider = make_provider(start_sandbox(latency_ms=150).url)
    assert create(provider).latency_ms >= 140


# --- edge cases through an in-memory transport: shapes the sandbox does not produce ----------


def mock_provider(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> HttpProvider:
    return HttpProvider(name="mock", base_url="http://psp.test", transport=httpx.MockTransport(handler), **options)


GOOD = {
    "provider_reference": "sbx_1",
    "order_reference": "ORD-1",
    "merchant": "acme",
    "amount": "5.00",
    "currency": "CNY",
    "status": "succeeded",
    "failure_code": None,
    "action_required": None,
}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "status"}, "status"),
        (GOOD | {"status": "teleported"}, "status"),
        ({k: v for k, v in GOOD.items() if k != "provider_reference"}, "provider_reference"),
        (GOOD | {"amount": "twelve"}, "amount"),
        (GOOD | {"amount": True}, "amount"),
        (GOOD | {"amount": "-1"}, "amount"),
        (GOOD | {"currency": "YUAN"}, "currency"),
        (["not", "an", "object"], "payment"),
    ],
)
def test_missing_or_invalid_fields_are_malformed(body: object, field: str) -> None:
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    error = error_of(lambda: provider.query("sbx_1"))
    assert error.kind == "malformed"
    assert field in error.message


def test_numeric_amounts_are_read_exactly() -> None:
    provider = mock_provider(lambda request: httpx.Response(200, json=GOOD | {"amount": 0.1}))
    assert provider.query("sbx_1").amount == Decimal("0.1")


def test_client_errors_are_http_errors() -> None:
    provider = mock_provider(lambda request: httpx.Response(401, json={"error": "unauthorized"}))
    error = error_of(lambda: provider.query("sbx_1"))
    assert (error.kind, error.http_status) == ("http_error", 401)


def test_excerpt_is_short() -> None:
    provider = mock_provider(lambda request: httpx.Response(502, text="x" * 5000))
    assert len(error_of(lambda: provider.query("sbx_1")).excerpt) <= EXCERPT_CHARS


def test_oversized_answer_is_malformed() -> None:
    provider = mock_provider(lambda request: httpx.Response(200, content=b" " * (MAX_RESPONSE_BYTES + 10)))
    assert error_of(lambda: provider.query("sbx_1")).kind == "malformed"


def test_invalid_utf8_is_malformed() -> None:
    provider = mock_provider(lambda request: httpx.Response(200, content=b'{"status": "\xff"}'))
    assert error_of(lambda: provider.query("sbx_1")).kind == "malformed"


def counting(fail_times: int) -> tuple[list[str], Callable[[httpx.Request], httpx.Response]]:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) <= fail_times:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201 if request.method == "POST" else 200, json=GOOD | {"status": "pending"})

    return calls, handler


def test_query_is_retried_once_on_connection_errors() -> None:
    calls, handler = counting(fail_times=1)
    assert mock_provider(handler).query("sbx_1").status == "pending"
    assert calls == ["GET", "GET"]

    calls, handler = counting(fail_times=2)
    assert error_of(lambda: mock_provider(handler).query("sbx_1")).kind == "connection"
    assert calls == ["GET", "GET"]


def test_create_is_never_retried() -> None:
    calls, handler = counting(fail_times=1)
    assert error_of(lambda: create(mock_provider(handler))).kind == "connection"
    assert calls == ["POST"]


def test_timeouts_are_not_retried() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadTimeout("slow", request=request)

    assert error_of(lambda: mock_provider(handler).query("sbx_1")).kind == "timeout"
    assert calls == ["GET"]


def test_create_sends_the_amount_as_a_decimal_string() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(201, json=GOOD | {"status": "pending"})

    create(mock_provider(handler), amount=Decimal("12.30"))
    assert seen[0]["amount"] == "12.30"
    assert seen[0]["idempotency_key"] == "att-1"


def test_sandbox_server_reports_its_port() -> None:
    with SandboxServer(webhook_secrets=[]) as server:
        assert server.port > 0
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
