"""End to end over real HTTP: 200 orders paid at the sandbox provider, which loses callbacks,
times out and declines on purpose; signed callbacks reach Django's live server; the re-check
engine and the sweep clean up the rest. At the end every order has an outcome or a correct
flag, and no provider result was applied twice.

On SQLite the test database lives in memory and pytest-django hands the live server thread
the very connection the test uses; Django's documentation asks that the two threads never
query through it at the same time. The test serializes them with one lock (around the
webhook view and around its own database work). On PostgreSQL the lock is not needed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from orders import services
from orders.causes import Cause
from orders.exceptions import ValidationFailed
from orders.diagnosis import diagnose
from orders.evidence import gather_evidence
from orders.models import Order, OrderEvent, PaymentAttempt, PaymentCheck, ProviderCallback, RecheckPolicy
from orders.providers.base import ProviderError
from orders.providers.registry import clear_cache, get_provider
from orders.providers.sandbox import SandboxServer
from orders.recheck import recheck_due
from orders.states import AttemptStatus, OrderStatus
from orders.sweep import sweep_unreturned

from .engine_helpers import ENGINE_ACTOR, Kind
from .factories import MerchantFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ORDERS = 200
RESOLVED = (OrderStatus.CONFIRMED, OrderStatus.PAYMENT_FAILED)
KNOBS = {
    "seed": 20261126,
    "lost_callback_rate": 0.3,
    "timeout_rate": 0.1,
    "hang_seconds": 0.6,  # longer than the read timeout below, shorter than pending_seconds
    "decline_rate": 0.05,
    "pending_seconds": 1.5,
    "callback_retry_ms": 200,
    "callback_attempts": 5,
}
READ_TIMEOUT = 0.3


@pytest.fixture
def db_lock(monkeypatch):
    """A lock shared by the webhook view and the test's own database work on SQLite."""
    if connection.vendor != "sqlite":
        yield contextlib.nullcontext()
        return
    lock = threading.RLock()
    from backoffice import urls

    pattern = next(p for p in urls.urlpatterns if getattr(p, "name", None) == "provider-webhook")
    view = pattern.callback

    @functools.wraps(view)  # keeps csrf_exempt
    def serialized(request, *args, **kwargs):
        with lock:
            return view(request, *args, **kwargs)

    monkeypatch.setattr(pattern, "callback", serialized)
    yield lock


@pytest.fixture
def wired_sandbox(live_server, settings):
    secret = settings.SANDBOX_WEBHOOK_SECRET
    server = SandboxServer(KNOBS, webhook_url=live_server.url + "/webhooks/sandbox/", webhook_secrets=[secret])
    server.start()
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["sandbox"] = {
        "adapter": "http",
        "base_url": server.url,
        "webhook_secrets": [secret],
        "connect_timeout": 1.0,
        "read_timeout": READ_TIMEOUT,
        "query_retries": 0,
    }
    settings.PAYMENT_PROVIDERS = providers
    clear_cache()
    yield server
    server.stop()
    clear_cache()


def _start_payment(order: Order) -> None:
    """What a checkout does: ask the provider, then record the attempt with what it said."""
    key = f"{order.merchant.code}-{order.reference}"
    try:
        created = get_provider("sandbox").create_payment(
            idempotency_key=key, amount=order.amount, currency=order.currency,
            order_reference=order.reference, merchant=order.merchant.code,
        )
        status, reference = AttemptStatus.PENDING, created.provider_reference
    except ProviderError:
        # No answer in time: the payment may exist. The re-check settles it.
        status, reference = AttemptStatus.UNKNOWN, ""
    try:
        services.create_payment_attempt(
            order=order, provider="sandbox", provider_reference=reference, idempotency_key=key, status=status,
            next_check_at=timezone.now(), actor=ENGINE_ACTOR,
        )
    except ValidationFailed:
        # The provider's callback beat us and recorded the attempt under our key already.
        assert PaymentAttempt.objects.filter(idempotency_key=key, order=order).exists()


def test_two_hundred_orders_through_a_misbehaving_provider_end_resolved_and_applied_once(
    wired_sandbox, db_lock
):
    started = time.monotonic()
    with db_lock:
        merchant = MerchantFactory(code="e2e-shop", stuck_after=timedelta(seconds=30), escalate_after=timedelta(minutes=5))
        RecheckPolicy.objects.create(
            provider="sandbox", pending_delays=[1] * 40, unknown_delays=[1] * 40, jitter=0, max_in_flight=16
        )
    order_ids = []
    for n in range(ORDERS):
        with db_lock:
            order = services.create_order(
                merchant=merchant, reference=f"E2E-{n:04d}", amount=Decimal(100 + n) / 4, currency="CNY",
                customer_name="Zhao Lei", customer_email="zhao.lei@example.com", customer_phone="+86 139 0000 0000",
                shipping_address="8 Nanjing Road, Shanghai", actor=ENGINE_ACTOR,
            )
            _start_payment(order)
        order_ids.append(order.pk)

    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        time.sleep(0.5)
        with db_lock:
            recheck_due(time_budget=5)
            resolved = Order.objects.filter(pk__in=order_ids, status__in=RESOLVED).count()
        if resolved == ORDERS:
            break
    # Let callbacks that are still in flight land, then the sweep looks at whatever is left.
    time.sleep(1.0)
    with db_lock:
        sweep_unreturned(now=timezone.now() + timedelta(minutes=5))
        _assert_outcomes(order_ids)
        _assert_applied_once(order_ids)
        _assert_every_path_was_exercised(wired_sandbox, order_ids)
    assert time.monotonic() - started < 60


def _assert_outcomes(order_ids: list[int]) -> None:
    orders = list(Order.objects.filter(pk__in=order_ids))
    statuses = Counter(o.status for o in orders)
    unresolved = [o for o in orders if o.status not in RESOLVED]
    evidence = gather_evidence([o.pk for o in unresolved])
    now = timezone.now() + timedelta(minutes=5)
    for order in unresolved:
        expected = diagnose(evidence[order.pk], now=now)
        assert expected is not None and order.stuck_cause == expected.cause, (order.reference, order.status)
    # The provider neither duplicated nor changed amounts: no money problem may be reported.
    money = Order.objects.filter(
        pk__in=order_ids, stuck_cause__in=[Cause.DUPLICATE_PAYMENT, Cause.AMOUNT_MISMATCH]
    ).values_list("reference", "stuck_cause")
    assert list(money) == []
    assert Order.objects.filter(pk__in=order_ids, needs_review=True).count() == 0
    assert statuses[OrderStatus.CONFIRMED] + statuses[OrderStatus.PAYMENT_FAILED] == len(order_ids), statuses
    for order in orders:
        attempts = list(order.attempts.all())
        succeeded = [a for a in attempts if a.status == AttemptStatus.SUCCEEDED]
        if order.status == OrderStatus.CONFIRMED:
            assert len(succeeded) == 1 and order.captured_amount == order.amount
            assert order.receipt_number and order.dispatch_number
        else:
            assert succeeded == []
        assert len(attempts) == 1, f"{order.reference} has {len(attempts)} attempts"


def _assert_applied_once(order_ids: list[int]) -> None:
    into: Counter = Counter()
    for attempt_id, to in OrderEvent.objects.filter(
        order_id__in=order_ids, kind=Kind.ATTEMPT_STATUS_CHANGED
    ).values_list("attempt_id", "data__to"):
        into[(attempt_id, to)] += 1
    assert [key for key, count in into.items() if count > 1] == []
    paid: Counter = Counter()
    for order_id, to in OrderEvent.objects.filter(order_id__in=order_ids, kind=Kind.STATUS_CHANGED).values_list(
        "order_id", "data__to"
    ):
        if to == OrderStatus.PAID:
            paid[order_id] += 1
    assert [order_id for order_id, count in paid.items() if count > 1] == []


def _assert_every_path_was_exercised(server: SandboxServer, order_ids: list[int]) -> None:
    stats = server.sandbox.control()["stats"]
    assert stats["callbacks_suppressed"] > 0 and stats["requests_hung"] > 0
    # Results arrived both ways: by signed callback, and by re-check for the lost callbacks.
    assert ProviderCallback.objects.filter(signature_valid=True, outcome="applied").exists()
    assert OrderEvent.objects.filter(order_id__in=order_ids, kind=Kind.RESULT_APPLIED, data__reconciled=True).exists()
    assert PaymentCheck.objects.filter(error_kind="timeout").exists()
