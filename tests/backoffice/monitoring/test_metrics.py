"""/metrics: refused without the bearer token, parsed by prometheus-client's own parser, built
from the database at scrape time in a constant number of queries."""

from __future__ import annotations

from datetime import timedelta

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from prometheus_client.parser import text_string_to_metric_families

from backoffice.monitoring.heartbeat import beat
from backoffice.monitoring.metrics import FAMILIES, register_family
from orders import telemetry
from orders.causes import Cause
from orders.models import UnreturnedSnapshot
from orders.snapshots import AGE_BUCKETS
from support.models import Notification, NotificationKind, NotificationStatus, Ticket
from tests.orders.engine_helpers import new_order, pay_at_sandbox, pending_order
from tests.orders.engine_helpers import sandbox  # noqa: F401 - fixture
from tests.orders.test_webhooks import deliver, payload, signed_headers
from tests.support.factories import open_ticket_for

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


@pytest.fixture
def token(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture
def task_queue(monkeypatch):
    """A broker on a queue of this test's own (parallel test processes share one Redis)."""
    from backoffice.monitoring import queue

    name = f"metrics-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(queue, "_list_key", lambda: name)
    broker = get_broker(list_key=name)
    yield broker
    broker.delete_queue()


def scrape(client, token: str = TOKEN):
    return client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")


def families(client) -> dict:
    response = scrape(client)
    assert response.status_code == 200, response.content
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def samples(family, name: str | None = None) -> dict[tuple, float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if name is None or sample.name == name
    }


# --- the token ----------------------------------------------------------------------------------


def test_a_request_without_the_token_is_refused(client, token):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"recovery_" not in response.content


@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Token {TOKEN}", f"Basic {TOKEN}", "Bearer", TOKEN])
def test_a_wrong_token_or_scheme_is_refused(client, token, header):
    response = client.get("/metrics", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_without_a_configured_token_metrics_are_off(client, settings):
    settings.METRICS_TOKEN = ""

    response = scrape(client, "")

    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


def test_the_scrape_is_never_cached_and_needs_no_session(client, token):
    response = scrape(client)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert "sessionid" not in response.cookies


# --- the families ---------------------------------------------------------------------------------


def test_the_output_parses_with_prometheus_clients_parser(client, token):
    UnreturnedSnapshot.objects.create(total=0, needs_review=0)

    parsed = families(client)

    assert {"recovery_unreturned_orders", "recovery_provider_checks", "recovery_provider_check_latency_seconds",
            "recovery_provider_callbacks", "recovery_task_queue_depth", "recovery_task_queue_oldest_age_seconds",
            "recovery_tickets_sla_breached", "recovery_notifications", "recovery_task_cluster_up",
            "recovery_scrape_errors"} <= set(parsed)
    assert parsed["recovery_provider_checks"].type == "counter"
    assert parsed["recovery_provider_check_latency_seconds"].type == "histogram"


def test_the_unreturned_backlog_comes_from_the_latest_snapshot(client, token):
    now = timezone.now()
    UnreturnedSnapshot.objects.create(taken_at=now - timedelta(minutes=10), total=99, needs_review=9)
    UnreturnedSnapshot.objects.create(
        taken_at=now - timedelta(seconds=30), total=7, needs_review=2,
        by_cause={Cause.RESULT_UNKNOWN: 4, Cause.CALLBACK_LOST: 3}, by_category={"network": 4, "provider": 3},
        by_provider={"sandbox": 6}, by_age={"lt15m": 5, "gt24h": 2},
    )

    parsed = families(client)

    assert samples(parsed["recovery_unreturned_orders"]) == {(): 7}
    assert samples(parsed["recovery_unreturned_orders_needs_review"]) == {(): 2}
    by_cause = samples(parsed["recovery_unreturned_orders_by_cause"])
    assert by_cause[(("cause", "result_unknown"),)] == 4
    assert by_cause[(("cause", "provider_outage"),)] == 0  # every cause is present
    assert len(by_cause) == len(Cause)
    assert samples(parsed["recovery_unreturned_orders_by_provider"]) == {(("provider", "sandbox"),): 6}
    assert set(samples(parsed["recovery_unreturned_orders_by_age"])) == {(("age", code),) for code in AGE_BUCKETS}
    assert samples(parsed["recovery_unreturned_orders_by_category"])[(("category", "network"),)] == 4
    (age,) = samples(parsed["recovery_unreturned_snapshot_age_seconds"]).values()
    assert 29 <= age < 90


def test_before_the_first_snapshot_the_backlog_is_absent_not_zero(client, token):
    parsed = families(client)

    assert "recovery_unreturned_orders" not in parsed


def test_counters_increase_after_a_check_and_a_callback(client, settings, token, sandbox,  # noqa: F811
                                                        django_capture_on_commit_callbacks):
    from orders.recheck import recheck_due

    def checks_total() -> float:
        return sum(samples(families(client)["recovery_provider_checks"], "recovery_provider_checks_total").values())

    def callbacks_total() -> float:
        return sum(samples(families(client)["recovery_provider_callbacks"],
                           "recovery_provider_callbacks_total").values())

    before_checks, before_callbacks = checks_total(), callbacks_total()
    sandbox(pending_seconds=0)
    pay_at_sandbox(new_order())
    with django_capture_on_commit_callbacks(execute=True):
        recheck_due()
    after_check = checks_total()

    _order, attempt = pending_order()
    body = payload(attempt)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, body, signed_headers(body, secret=settings.SANDBOX_WEBHOOK_SECRET))

    assert after_check == before_checks + 1
    assert checks_total() == after_check + 1  # the callback is journaled as a check too
    assert callbacks_total() == before_callbacks + 1
    callbacks = samples(families(client)["recovery_provider_callbacks"], "recovery_provider_callbacks_total")
    assert callbacks[(("outcome", "applied"), ("provider", "sandbox"), ("signature", "valid"))] == 1


def test_histogram_buckets_are_cumulative(client, token, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.add_many(telemetry.histogram_increments(
            telemetry.CHECK_LATENCY, {"provider": "sandbox"}, [0.01, 0.07, 0.07, 0.3, 3, 30]))

    family = families(client)["recovery_provider_check_latency_seconds"]

    buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)  # in order of their bounds
    values = [value for _bound, value in buckets]
    assert values == sorted(values)  # never decreasing
    by_bound = dict(buckets)
    assert by_bound[0.05] == 1
    assert by_bound[0.1] == 3
    assert by_bound[0.5] == 4
    assert by_bound[5.0] == 5
    assert by_bound[float("inf")] == 6
    count = next(s.value for s in family.samples if s.name.endswith("_count"))
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert count == 6
    assert total == pytest.approx(33.45)


def test_the_queue_depth_and_the_age_of_the_oldest_task(client, token, task_queue):
    broker = task_queue
    now = timezone.now()
    for minutes in (7, 2):
        broker.enqueue(SignedPackage.dumps({"id": f"t{minutes}", "func": "math.floor", "args": (1,), "kwargs": {},
                                            "started": now - timedelta(minutes=minutes)}))

    parsed = families(client)

    assert samples(parsed["recovery_task_queue_depth"]) == {(): 2}
    (age,) = samples(parsed["recovery_task_queue_oldest_age_seconds"]).values()
    assert 7 * 60 <= age < 7 * 60 + 60


def test_tickets_breaching_their_sla(client, token):
    now = timezone.now()
    late_reply = open_ticket_for()
    late_both = open_ticket_for()
    paused = open_ticket_for()
    on_time = open_ticket_for()
    Ticket.objects.filter(pk=late_reply.pk).update(first_response_due_at=now - timedelta(minutes=5))
    Ticket.objects.filter(pk=late_both.pk).update(first_response_due_at=now - timedelta(hours=2),
                                                  resolution_due_at=now - timedelta(hours=1))
    Ticket.objects.filter(pk=paused.pk).update(resolution_due_at=now - timedelta(hours=1), sla_paused_at=now)
    assert on_time.resolution_due_at > now

    parsed = families(client)

    assert samples(parsed["recovery_tickets_sla_breached"]) == {(): 2}
    assert samples(parsed["recovery_ticket_sla_breaches"]) == {
        (("kind", "first_response"),): 2, (("kind", "resolution"),): 1,
    }


def test_notifications_pending_and_failed(client, token):
    order = new_order()
    for n, status in enumerate([NotificationStatus.PENDING, NotificationStatus.PENDING, NotificationStatus.FAILED,
                                NotificationStatus.SENT]):
        Notification.objects.create(order=order, kind=NotificationKind.ACTION_NEEDED, dedupe_key=f"test:{n}",
                                    recipient="someone@example.com", status=status)

    parsed = families(client)

    assert samples(parsed["recovery_notifications"]) == {
        (("status", "pending"),): 2, (("status", "sending"),): 0, (("status", "failed"),): 1,
    }


def test_the_cluster_heartbeat(client, token):
    assert samples(families(client)["recovery_task_cluster_up"]) == {(): 0}

    beat(now=timezone.now() - timedelta(seconds=20))
    parsed = families(client)

    assert samples(parsed["recovery_task_cluster_up"]) == {(): 1}
    (age,) = samples(parsed["recovery_task_cluster_heartbeat_age_seconds"]).values()
    assert 19 <= age < 60


def test_a_broken_family_is_reported_and_the_rest_still_scraped(client, token):
    def broken_families(now):
        raise RuntimeError("this source is down")

    register_family(broken_families)
    try:
        parsed = families(client)
    finally:
        FAMILIES.remove(broken_families)

    assert samples(parsed["recovery_scrape_errors"]) == {(("family", "broken"),): 1}
    assert "recovery_task_queue_depth" in parsed


def test_the_query_count_of_a_scrape_does_not_grow_with_the_data(client, token, task_queue,
                                                               django_capture_on_commit_callbacks):
    def queries_of_a_scrape() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert scrape(client).status_code == 200
        return len(queries)

    UnreturnedSnapshot.objects.create(total=0, needs_review=0)
    empty = queries_of_a_scrape()

    beat()
    for _ in range(3):
        open_ticket_for()
    task_queue.enqueue(SignedPackage.dumps({"id": "t", "func": "math.floor", "started": timezone.now()}))
    with django_capture_on_commit_callbacks(execute=True):
        for provider in ("a", "b", "c"):
            telemetry.add_many(telemetry.check_increments([(provider, "scheduled", "succeeded", False, 0.2)] * 5))
            telemetry.add(telemetry.CALLBACKS, {"provider": provider, "signature": "valid", "outcome": "applied"})
    UnreturnedSnapshot.objects.create(total=5, needs_review=1, by_cause={Cause.RESULT_UNKNOWN: 5},
                                      by_provider={"a": 2, "b": 3})
    full = queries_of_a_scrape()

    assert full == empty
    assert full <= 8
