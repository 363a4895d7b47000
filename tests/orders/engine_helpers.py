"""Helpers and fixtures for the engine tests (results, re-checks, callbacks, sweep).

Fixtures defined here are imported explicitly by the test modules that use them, so there is
no shared conftest to grow: `from tests.orders.engine_helpers import sandbox  # noqa: F401`.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from orders import services
from orders.actors import Actor
from orders.models import Merchant, Order, OrderEvent, PaymentAttempt, RecheckPolicy
from orders.providers.base import ProviderResult
from orders.providers.registry import clear_cache, get_provider
from orders.providers.sandbox import SandboxServer
from orders.states import AttemptStatus

from .factories import MerchantFactory

ENGINE_ACTOR = Actor.system("engine test")
PROVIDER_ACTOR = Actor.provider("sandbox")
Kind = OrderEvent.Kind

_references = itertools.count(1)
_provider_refs = itertools.count(1)


def new_order(
    *,
    merchant: Merchant | None = None,
    amount: Decimal = Decimal("128.00"),
    currency: str = "CNY",
    reference: str | None = None,
    submitted_at: datetime | None = None,
) -> Order:
    """A submitted order whose customer data allows confirmation (it has an address)."""
    return services.create_order(
        merchant=merchant or MerchantFactory(),
        reference=reference or f"ENG-{next(_references):06d}",
        amount=amount,
        currency=currency,
        customer_name="Wang Fang",
        customer_email="wang.fang@example.com",
        customer_phone="+86 138 0013 8000",
        shipping_address="1 Renmin Road, Shanghai",
        actor=ENGINE_ACTOR,
        submitted_at=submitted_at,
    )


def pending_order(*, provider: str = "sandbox", status: str = AttemptStatus.PENDING, **order_kwargs: Any):
    """(order, attempt): a payment_pending order with one open attempt that has a provider reference."""
    order = new_order(**order_kwargs)
    attempt = services.create_payment_attempt(
        order=order,
        provider=provider,
        provider_reference=f"sbx_test_{next(_provider_refs):06d}",
        status=status,
        actor=ENGINE_ACTOR,
    )
    return Order.objects.get(pk=order.pk), PaymentAttempt.objects.get(pk=attempt.pk)


def add_attempt(order: Order, *, provider: str = "sandbox", status: str = AttemptStatus.PENDING) -> PaymentAttempt:
    attempt = services.create_payment_attempt(
        order=order,
        provider=provider,
        provider_reference=f"sbx_test_{next(_provider_refs):06d}",
        status=status,
        actor=ENGINE_ACTOR,
    )
    return PaymentAttempt.objects.get(pk=attempt.pk)


def flag_order(order: Order, cause: str, *, needs_review: bool = False) -> None:
    """Raise the unreturned flag the way the engine does (a locked order, one event)."""
    with transaction.atomic():
        services._flag_locked(
            services._lock_order(order.pk), cause=cause, needs_review=needs_review, actor=ENGINE_ACTOR,
            message="flagged by the test",
        )


def result_for(attempt: PaymentAttempt, status: str, **overrides: Any) -> ProviderResult:
    """What the provider would say about `attempt`, money matching unless overridden."""
    order = attempt.order
    values: dict[str, Any] = {
        "status": status,
        "provider_reference": attempt.provider_reference or f"sbx_test_{next(_provider_refs):06d}",
        "amount": attempt.amount,
        "currency": attempt.currency,
        "order_reference": order.reference,
        "merchant": order.merchant.code,
        "raw": {"status": status},
        "http_status": 200,
        "latency_ms": 3,
    }
    if status == AttemptStatus.FAILED:
        values["failure_code"] = "card_declined"
    values.update(overrides)
    return ProviderResult(**values)


def events(order: Order | int, kind: str | None = None) -> list[OrderEvent]:
    order_id = order if isinstance(order, int) else order.pk
    qs = OrderEvent.objects.filter(order_id=order_id).order_by("created_at", "id")
    if kind is not None:
        qs = qs.filter(kind=kind)
    return list(qs)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def short_policy(
    *, provider: str = "sandbox", merchant: Merchant | None = None, pending=None, unknown=None, jitter: float = 0.0
) -> RecheckPolicy:
    return RecheckPolicy.objects.create(
        provider=provider,
        merchant=merchant,
        pending_delays=pending or [1, 1, 1, 1, 1, 1, 1, 1],
        unknown_delays=unknown or [1, 1, 1, 1, 1, 1, 1, 1],
        jitter=jitter,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def run_in_threads(*calls: Callable[[], object], timeout: float = 30) -> list[object]:
    """Run the calls in threads released together by a barrier; each closes its connection."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[index] = call()
        except BaseException as exc:  # reported to the test
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return outcomes


@pytest.fixture
def sandbox(settings) -> Iterator[Callable[..., SandboxServer]]:
    """`sandbox(read_timeout=..., webhook_url=..., **knobs)`: a running sandbox on loopback that
    the "sandbox" provider of the settings points at (adapters are rebuilt for it)."""
    servers: list[SandboxServer] = []

    def start(
        *, read_timeout: float = 2.0, connect_timeout: float = 1.0, webhook_url: str | None = None, **knobs: Any
    ) -> SandboxServer:
        knobs.setdefault("seed", 11)
        knobs.setdefault("callback_retry_ms", 100)
        server = SandboxServer(knobs, webhook_url=webhook_url, webhook_secrets=[settings.SANDBOX_WEBHOOK_SECRET])
        server.start()
        servers.append(server)
        providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
        providers["sandbox"] = {
            "adapter": "http",
            "base_url": server.url,
            "webhook_secrets": [settings.SANDBOX_WEBHOOK_SECRET],
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "query_retries": 0,
        }
        settings.PAYMENT_PROVIDERS = providers
        clear_cache()
        return server

    yield start
    clear_cache()
    for server in servers:
        server.stop()


def pay_at_sandbox(order: Order, *, provider: str = "sandbox", now: datetime | None = None, key: str | None = None):
    """Start the order's payment at the sandbox over HTTP and record the attempt, due now."""
    adapter = get_provider(provider)
    key = key or f"{order.merchant.code}-{order.reference}"
    created = adapter.create_payment(
        idempotency_key=key,
        amount=order.amount,
        currency=order.currency,
        order_reference=order.reference,
        merchant=order.merchant.code,
    )
    attempt = services.create_payment_attempt(
        order=order,
        provider=provider,
        provider_reference=created.provider_reference,
        idempotency_key=key,
        status=AttemptStatus.PENDING,
        next_check_at=now or timezone.now(),
        actor=ENGINE_ACTOR,
    )
    return PaymentAttempt.objects.get(pk=attempt.pk)
