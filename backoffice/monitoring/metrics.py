"""`/metrics` in the Prometheus text format, behind `Authorization: Bearer <METRICS_TOKEN>`.

Nothing is kept in process memory: with several web processes on several machines, a
scrape reaching any of them must tell the same story. The collector builds every family at
scrape time from the database, with a constant number of queries:

- the unreturned backlog from the sweep's latest `UnreturnedSnapshot` (never a scan of orders);
- the engine's counters (checks, latencies, callbacks) from `TelemetryCounter` rows, which
  the engine increments (`orders.telemetry`);
- the task queue from the broker, tickets past their SLA, the customer-email outbox and the
  cluster's heartbeat from their tables.

One function per family group, listed in `FAMILIES`; `register_family` adds more. A family
whose query fails is left out of the scrape and reported in `recovery_scrape_errors`.
"""

from __future__ import annotations

import hmac
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from backoffice.monitoring import queue
from backoffice.monitoring.heartbeat import cluster_status
from orders import telemetry
from orders.causes import Category, Cause
from orders.models import TelemetryCounter, UnreturnedSnapshot
from orders.snapshots import AGE_BUCKETS
from support import sla
from support.models import Notification, NotificationStatus, Ticket

log = logging.getLogger(__name__)

PREFIX = "recovery_"
# The classic text format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Family = Callable[[datetime], Iterable[Metric]]


def unreturned_families(now: datetime) -> Iterator[Metric]:
    """The backlog as the sweep last counted it (every five minutes), and how old that count is."""
    snapshot = UnreturnedSnapshot.objects.order_by("-taken_at").first()
    if snapshot is None:
        return  # no sweep has counted yet: absent, rather than a misleading zero
    yield GaugeMetricFamily(f"{PREFIX}unreturned_snapshot_age_seconds",
                            "Seconds since the sweep last counted the unreturned orders.",
                            value=max((now - snapshot.taken_at).total_seconds(), 0.0))
    yield GaugeMetricFamily(f"{PREFIX}unreturned_orders", "Unreturned orders.", value=snapshot.total)
    yield GaugeMetricFamily(f"{PREFIX}unreturned_orders_needs_review", "Unreturned orders that need a person's review.",
                            value=snapshot.needs_review)
    dimensions = (
        ("cause", "Unreturned orders by cause.", snapshot.by_cause, Cause.values),
        ("category", "Unreturned orders by category of their cause.", snapshot.by_category, Category.values),
        ("provider", "Unreturned orders by payment provider of their attempts (an order with attempts at two "
                     "providers counts for both).", snapshot.by_provider, ()),
        ("age", "Unreturned orders by how long they have been unreturned.", snapshot.by_age, tuple(AGE_BUCKETS)),
    )
    for label, documentation, counts, known in dimensions:
        family = GaugeMetricFamily(f"{PREFIX}unreturned_orders_by_{label}", documentation, labels=[label])
        # Every known value, zero included, so a series does not vanish when its count drops to nothing.
        for value in dict.fromkeys([*known, *sorted(counts or {})]):
            family.add_metric([value or "none"], (counts or {}).get(value, 0))
        yield family


def _histogram_buckets(stored: dict[str, int]) -> list[tuple[str, float]]:
    """Per-bucket counts (as stored) to the cumulative buckets Prometheus expects."""
    bounds = sorted({float(le) for le in stored if le != telemetry.INF} | set(telemetry.LATENCY_BUCKETS))
    running, cumulative = 0, []
    for bound in bounds:
        running += stored.get(telemetry.bucket_label(bound), 0)
        cumulative.append((telemetry.bucket_label(bound), running))
    cumulative.append((telemetry.INF, running + stored.get(telemetry.INF, 0)))
    return cumulative


def engine_counter_families(now: datetime) -> Iterator[Metric]:
    """Check outcomes, check latency and callbacks: counters the engine stores (one query)."""
    latency = telemetry.CHECK_LATENCY
    rows = TelemetryCounter.objects.filter(
        name__in=[telemetry.CHECKS, telemetry.CALLBACKS, f"{latency}_bucket", f"{latency}_sum", f"{latency}_count"]
    ).values_list("name", "labels", "value")
    checks = CounterMetricFamily(
        f"{PREFIX}provider_checks",
        "Provider checks journaled, by provider, source (scheduled, manual, callback, on_read), result "
        "(answer or error) and outcome (the status the provider reported, or the kind of error).",
        labels=["provider", "source", "result", "outcome"],
    )
    callbacks = CounterMetricFamily(
        f"{PREFIX}provider_callbacks",
        "Provider callbacks received, by provider, signature (valid or invalid) and outcome.",
        labels=["provider", "signature", "outcome"],
    )
    buckets: dict[str, dict[str, int]] = defaultdict(dict)
    sums: dict[str, int] = {}
    for name, labels, value in rows:
        if name == telemetry.CHECKS:
            checks.add_metric([labels.get(k, "") for k in ("provider", "source", "result", "outcome")], value)
        elif name == telemetry.CALLBACKS:
            callbacks.add_metric([labels.get(k, "") for k in ("provider", "signature", "outcome")], value)
        elif name == f"{latency}_bucket":
            buckets[labels.get("provider", "")][labels.get("le", telemetry.INF)] = value
        elif name == f"{latency}_sum":
            sums[labels.get("provider", "")] = value
    histogram = HistogramMetricFamily(f"{PREFIX}{latency}", "Latency of provider checks in seconds, by provider.",
                                      labels=["provider"])
    for provider in sorted(buckets):
        histogram.add_metric([provider], _histogram_buckets(buckets[provider]),
                             sums.get(provider, 0) / telemetry.SUM_SCALE)
    yield checks
    yield histogram
    yield callbacks


def queue_families(now: datetime) -> Iterator[Metric]:
    stats = queue.queue_stats(now=now)
    yield GaugeMetricFamily(f"{PREFIX}task_queue_depth", "Tasks waiting for a worker.", value=stats.depth)
    yield GaugeMetricFamily(f"{PREFIX}task_queue_oldest_age_seconds",
                            "Seconds since the oldest waiting task was enqueued (0 when none waits).",
                            value=stats.oldest_age_seconds(now))


def ticket_sla_families(now: datetime) -> Iterator[Metric]:
    """Open tickets whose first response or resolution is overdue (clock running), in one query."""
    first_response, resolution = sla.first_response_due_by(now), sla.resolution_due_by(now)
    counts = Ticket.objects.filter(sla.running_open()).aggregate(
        first_response=Count("pk", filter=first_response),
        resolution=Count("pk", filter=resolution),
        breached=Count("pk", filter=first_response | resolution),
    )
    yield GaugeMetricFamily(f"{PREFIX}tickets_sla_breached",
                            "Open tickets past their first-response or resolution due time.",
                            value=counts["breached"])
    family = GaugeMetricFamily(f"{PREFIX}ticket_sla_breaches",
                               "Open tickets past a due time, by which one (a ticket can be past both).",
                               labels=["kind"])
    family.add_metric(["first_response"], counts["first_response"])
    family.add_metric(["resolution"], counts["resolution"])
    yield family


NOTIFICATION_STATUSES = (NotificationStatus.PENDING, NotificationStatus.SENDING, NotificationStatus.FAILED)


def notification_families(now: datetime) -> Iterator[Metric]:
    """The customer-email outbox: waiting to be sent, being sent, given up on (one query)."""
    counts = dict(
        Notification.objects.filter(status__in=NOTIFICATION_STATUSES).order_by()
        .values_list("status").annotate(n=Count("pk"))
    )
    family = GaugeMetricFamily(f"{PREFIX}notifications", "Customer notifications by status (sent ones are not "
                               "counted).", labels=["status"])
    for status in NOTIFICATION_STATUSES:
        family.add_metric([str(status)], counts.get(status, 0))
    yield family


def cluster_families(now: datetime) -> Iterator[Metric]:
    status = cluster_status(now=now)
    yield GaugeMetricFamily(f"{PREFIX}task_cluster_up", "1 when the task cluster's heartbeat is younger than "
                            "two minutes.", value=1 if status.alive else 0)
    if status.age_seconds is not None:
        yield GaugeMetricFamily(f"{PREFIX}task_cluster_heartbeat_age_seconds",
                                "Seconds since the task cluster's last heartbeat.", value=status.age_seconds)


FAMILIES: list[Family] = [
    unreturned_families,
    engine_counter_families,
    queue_families,
    ticket_sla_families,
    notification_families,
    cluster_families,
]


def register_family(family: Family) -> Family:
    """Add a family function to every scrape (usable as a decorator)."""
    if family not in FAMILIES:
        FAMILIES.append(family)
    return family


class DatabaseCollector:
    """Builds every family from the database at scrape time. `describe` returns nothing, so
    registering the collector runs no query."""

    def __init__(self, families: list[Family] | None = None) -> None:
        self.families = FAMILIES if families is None else families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        errors = GaugeMetricFamily(f"{PREFIX}scrape_errors", "1 for a metric family that could not be read on this "
                                   "scrape (see the web server's log).", labels=["family"])
        for family in self.families:
            name = getattr(family, "__name__", repr(family)).removesuffix("_families")
            try:
                metrics = list(family(now))
            except Exception:  # noqa: BLE001 - one broken source must not blank the whole scrape
                log.exception("metrics: the %s family could not be read", name)
                errors.add_metric([name], 1)
                continue
            yield from metrics
        yield errors


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def _bearer_token(request: HttpRequest) -> str:
    scheme, _space, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(f"{text}\n", status=status, content_type="text/plain; charset=utf-8")


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    expected = settings.METRICS_TOKEN
    if not expected:
        return _plain(_("Metrics are turned off: set METRICS_TOKEN on the server and send it as "
                        "“Authorization: Bearer <token>”."), 403)
    supplied = _bearer_token(request)
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        response = _plain(_("A valid metrics token is needed: send “Authorization: Bearer <token>”."), 401)
        response["WWW-Authenticate"] = (
            'Bearer realm="metrics", error="invalid_token"' if supplied else 'Bearer realm="metrics"'
        )
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE)

