from datetime import timedelta

import pytest
from django.utils import timezone

from orders.models import PaymentCheck
from orders.selectors import provider_check_stats
from tests.orders.factories import PaymentAttemptFactory, StaffUserFactory

pytestmark = pytest.mark.django_db


def make_checks(provider: str, *, ok: int, errors: int, latency: int = 100) -> None:
    attempt = PaymentAttemptFactory(provider=provider)
    for i in range(ok):
        PaymentCheck.objects.create(attempt=attempt, source="scheduled", reported_status="pending",
                                    latency_ms=latency + i)
    for _ in range(errors):
        PaymentCheck.objects.create(attempt=attempt, source="scheduled", error_kind="timeout", latency_ms=5000)


def test_provider_check_stats_counts_errors_per_provider():
    make_checks("alpha", ok=8, errors=2)
    make_checks("beta", ok=5, errors=0)
    stats = {s.provider: s for s in provider_check_stats(since=timezone.now() - timedelta(hours=1))}
    assert (stats["alpha"].checks, stats["alpha"].errors) == (10, 2)
    assert stats["alpha"].error_rate == pytest.approx(0.2)
    assert stats["beta"].errors == 0


def test_provider_check_stats_p95_latency_reflects_slow_checks():
    make_checks("alpha", ok=15, errors=5, latency=100)
    (alpha,) = provider_check_stats(since=timezone.now() - timedelta(hours=1))
    assert alpha.p95_latency_ms == 5000


def test_provider_check_stats_p95_latency_is_the_nearest_rank():
    make_checks("alpha", ok=19, errors=1, latency=100)
    (alpha,) = provider_check_stats(since=timezone.now() - timedelta(hours=1))
    assert alpha.p95_latency_ms == 118


def test_provider_check_stats_ignores_checks_before_the_period():
    make_checks("alpha", ok=3, errors=0)
    PaymentCheck.objects.update(checked_at=timezone.now() - timedelta(hours=2))
    assert provider_check_stats(since=timezone.now() - timedelta(hours=1)) == []


def test_check_log_page_shows_provider_health_and_filters_by_provider(client):
    make_checks("alpha", ok=3, errors=1)
    make_checks("beta", ok=2, errors=0)
    client.force_login(StaffUserFactory(is_superuser=True))
    page = client.get("/admin/orders/paymentcheck/")
    assert page.status_code == 200
    assert b"provider-health" in page.content and b"alpha" in page.content
    filtered = client.get("/admin/orders/paymentcheck/?attempt__provider=beta")
    assert filtered.status_code == 200
    assert len(filtered.context["cl"].result_list) == 2
