"""The signals alert rules watch (not Django signals): each is a function
`(window, now) -> [(labels, value), ...]` over cheap, indexed queries.

A signal returns one value per label set it knows about right now; a label set that is absent
has no data, which clears a rule's condition for it (an incident for it resolves). Register a
new one with `@alert_signal(...)`; rules name it in their `signal` field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _

from backoffice.monitoring.heartbeat import cluster_status
from orders.models import PaymentAttempt, PaymentCheck, ProviderCallback, UnreturnedSnapshot
from orders.states import AttemptStatus
from support import sla
from support.models import Ticket

Series = list[tuple[dict[str, str], float]]
Compute = Callable[[timedelta, datetime], Series]

# A heartbeat that was never written reads as this old: older than any sensible threshold.
MISSING_HEARTBEAT_AGE = 10**9
# The error rate of a provider with fewer checks in the window says nothing (one timeout out of
# two checks is not an outage): below this many checks it is not reported (the signal's
# description says 10).
MIN_CHECKS_FOR_ERROR_RATE = 10


@dataclass(frozen=True)
class AlertSignal:
    name: str
    label: str
    description: str
    unit: str
    label_names: tuple[str, ...]
    uses_window: bool
    compute: Compute

    def __call__(self, window: timedelta, now: datetime) -> Series:
        return self.compute(window, now)


SIGNALS: dict[str, AlertSignal] = {}


def alert_signal(*, name: str, label, description, unit, label_names: tuple[str, ...] = (), uses_window: bool = True):
    def register(compute: Compute) -> Compute:
        SIGNALS[name] = AlertSignal(name, label, description, unit, label_names, uses_window, compute)
        return compute

    return register


@alert_signal(
    name="provider_stuck_attempts",
    label=_("Stuck payment attempts per provider"),
    description=_("Payment attempts created within the window that are still pending or unknown, per provider; "
                  "attempts waiting for the customer (3-D Secure, bank app) are not counted."),
    unit=_("attempts"),
    label_names=("provider",),
)
def provider_stuck_attempts(window: timedelta, now: datetime) -> Series:
    rows = (
        PaymentAttempt.objects.filter(
            created_at__gt=now - window, created_at__lte=now,
            status__in=[AttemptStatus.PENDING, AttemptStatus.UNKNOWN], action_required="",
        )
        .order_by().values("provider").annotate(n=Count("id")).values_list("provider", "n")
    )
    return [({"provider": provider}, float(n)) for provider, n in rows]


@alert_signal(
    name="provider_check_error_rate",
    label=_("Check error rate per provider (%)"),
    description=_("Share of the checks within the window that got no answer from the provider (timeouts, "
                  "connection and HTTP errors, malformed answers), in percent; only providers with at least "
                  "10 checks in the window."),
    unit="%",
    label_names=("provider",),
)
def provider_check_error_rate(window: timedelta, now: datetime) -> Series:
    rows = (
        PaymentCheck.objects.filter(checked_at__gt=now - window, checked_at__lte=now)
        .order_by().values("attempt__provider")
        .annotate(n=Count("id"), errors=Count("id", filter=~Q(error_kind=PaymentCheck.ErrorKind.NONE)))
        .values_list("attempt__provider", "n", "errors")
    )
    return [
        ({"provider": provider}, round(100.0 * errors / n, 2))
        for provider, n, errors in rows if n >= MIN_CHECKS_FOR_ERROR_RATE
    ]


@alert_signal(
    name="unreturned_backlog",
    label=_("Unreturned orders (latest count)"),
    description=_("The unreturned orders in the sweep's latest snapshot (taken every five minutes)."),
    unit=_("orders"),
    uses_window=False,
)
def unreturned_backlog(window: timedelta, now: datetime) -> Series:
    total = (
        UnreturnedSnapshot.objects.filter(taken_at__lte=now).order_by("-taken_at").values_list("total", flat=True).first()
    )
    return [] if total is None else [({}, float(total))]


@alert_signal(
    name="cluster_heartbeat_age",
    label=_("Age of the task cluster's heartbeat (seconds)"),
    description=_("Seconds since the task cluster last ran its heartbeat task; a cluster that never beat "
                  "counts as very old."),
    unit=_("seconds"),
    uses_window=False,
)
def cluster_heartbeat_age(window: timedelta, now: datetime) -> Series:
    status = cluster_status(now=now)
    age = status.age_seconds
    return [({}, float(MISSING_HEARTBEAT_AGE if age is None else round(age, 1)))]


@alert_signal(
    name="callback_signature_failures",
    label=_("Callbacks failing signature checks"),
    description=_("Provider callbacks received within the window whose signature or timestamp did not verify, "
                  "per provider."),
    unit=_("callbacks"),
    label_names=("provider",),
)
def callback_signature_failures(window: timedelta, now: datetime) -> Series:
    rows = (
        ProviderCallback.objects.filter(received_at__gt=now - window, received_at__lte=now, signature_valid=False)
        .order_by().values("provider").annotate(n=Count("id")).values_list("provider", "n")
    )
    return [({"provider": provider}, float(n)) for provider, n in rows]


@alert_signal(
    name="tickets_breaching_sla",
    label=_("Open tickets past an SLA due time"),
    description=_("Open tickets with a running SLA clock whose first response or resolution is overdue."),
    unit=_("tickets"),
    uses_window=False,
)
def tickets_breaching_sla(window: timedelta, now: datetime) -> Series:
    count = Ticket.objects.filter(sla.running_open(), sla.due_by(now)).count()
    return [({}, float(count))]
