"""Alert rules and incidents: the evaluator and the services that change an incident.

`evaluate_rules` computes each enabled rule's signal, keeps the label sets its filter matches
and compares each value with the threshold:

- true, and no open incident for (rule, label set): one `Incident` opens, with its "opened"
  event and its notifications, in one transaction;
- true, and an incident is open: its latest value is recorded (nothing is sent again);
- false or absent, and an incident is open: it resolves, with its "resolved" event and
  notifications, in one transaction.

Every change is one conditional write, so concurrent evaluators cannot double-open (the
partial unique constraint `incident_one_open_per_rule_labels` refuses the second insert) nor
double-resolve (`UPDATE … WHERE status = 'open'` changes one row once). On top of that,
`run_evaluation` claims the interval on the "alert-evaluator" heartbeat row with a conditional
UPDATE, so the task cluster, the watchdog of `manage.py up`, web workers and `manage.py
evaluate_alerts --loop` evaluate once per interval between them.
"""

from __future__ import annotations

import logging
import operator
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from backoffice.monitoring.alert_signals import SIGNALS, Series
from backoffice.monitoring.models import (
    AlertRule,
    Comparison,
    Heartbeat,
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentStatus,
    Severity,
)
from backoffice.monitoring.notify import queue_incident_notifications, send_due_incident_notifications

log = logging.getLogger(__name__)

EVALUATOR = "alert-evaluator"
# One evaluation per interval across every evaluator. A little under the cluster's one-minute
# schedule, so that scheduler jitter does not make it skip every other minute.
EVALUATION_INTERVAL = timedelta(seconds=50)

COMPARE = {
    Comparison.GT: operator.gt,
    Comparison.GTE: operator.ge,
    Comparison.LT: operator.lt,
    Comparison.LTE: operator.le,
}


def label_key(labels: dict) -> str:
    """The canonical string of a label set: sorted `name=value` pairs joined by commas."""
    return ",".join(f"{name}={labels[name]}" for name in sorted(labels))[:255]


def matches(labels: dict, wanted: dict) -> bool:
    return all(str(labels.get(name)) == str(value) for name, value in (wanted or {}).items())


def rule_series(rule: AlertRule, *, now: datetime) -> Series:
    """The rule's signal for its window, restricted to the label sets its filter matches."""
    signal = SIGNALS[rule.signal]
    series = signal(timedelta(minutes=rule.window_minutes), now)
    return [(labels, value) for labels, value in series if matches(labels, rule.labels)]


def condition_holds(rule: AlertRule, value: float) -> bool:
    return COMPARE[rule.comparison](value, rule.threshold)


def incident_summary(rule: AlertRule, labels: dict) -> str:
    with translation.override(settings.LANGUAGE_CODE):
        if labels:
            text = _("%(rule)s (%(labels)s)") % {
                "rule": rule.name, "labels": ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))}
        else:
            text = rule.name
    return text[:300]


# --- services -------------------------------------------------------------------------------


def open_incident(*, rule: AlertRule, labels: dict, value: float, now: datetime | None = None) -> Incident | None:
    """Open the incident of (rule, labels) with its event and notifications, or return None when
    one is already open (also when a concurrent evaluator opened it a moment ago)."""
    now = now or timezone.now()
    key = label_key(labels)
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                rule=rule, labels=labels, label_key=key, status=IncidentStatus.OPEN, severity=rule.severity,
                summary=incident_summary(rule, labels), threshold=rule.threshold, opened_at=now, last_value=value,
                last_evaluated_at=now,
            )
            event = IncidentEvent.objects.create(
                incident=incident, kind=IncidentEventKind.OPENED, at=now, value=value,
                message=_condition_message(rule, value),
            )
            queue_incident_notifications(incident=incident, event=event, now=now)
    except IntegrityError:
        if Incident.objects.filter(rule=rule, label_key=key, status=IncidentStatus.OPEN).exists():
            return None
        raise
    log.warning("incident %s opened: %s (value %s)", incident.pk, incident.summary, value)
    return incident


def _condition_message(rule: AlertRule, value: float) -> str:
    with translation.override(settings.LANGUAGE_CODE):
        return _("%(signal)s is %(value)g, %(comparison)s %(threshold)g.") % {
            "signal": SIGNALS[rule.signal].label if rule.signal in SIGNALS else rule.signal, "value": value,
            "comparison": rule.get_comparison_display(), "threshold": rule.threshold,
        }


def resolve_incident(*, incident_id: int, value: float | None, now: datetime | None = None,
                     message: str = "") -> bool:
    """Resolve an open incident with its event and notifications. False if it was not open
    (already resolved, by a concurrent evaluator too): nothing is written then."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Incident.objects.filter(pk=incident_id, status=IncidentStatus.OPEN).update(
            status=IncidentStatus.RESOLVED, resolved_at=now, last_evaluated_at=now,
            **({"last_value": value} if value is not None else {}),
        )
        if not changed:
            return False
        incident = Incident.objects.select_related("rule").get(pk=incident_id)
        if not message:
            with translation.override(settings.LANGUAGE_CODE):
                message = (_("The condition no longer holds (latest value %(value)g).") % {"value": value}
                           if value is not None else _("The condition no longer holds (no data for these labels)."))
        event = IncidentEvent.objects.create(
            incident=incident, kind=IncidentEventKind.RESOLVED, at=now, value=value, message=message,
        )
        queue_incident_notifications(incident=incident, event=event, now=now)
    log.warning("incident %s resolved: %s", incident.pk, incident.summary)
    return True


def acknowledge_incident(*, incident_id: int, user, now: datetime | None = None, note: str = "") -> bool:
    """Record who acknowledged an incident and when (the first acknowledgement counts; later
    ones change nothing). Acknowledging silences nothing: the incident stays open until its
    condition clears. False if it was already acknowledged."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Incident.objects.filter(pk=incident_id, acknowledged_at__isnull=True).update(
            acknowledged_at=now, acknowledged_by=user
        )
        if changed:
            IncidentEvent.objects.create(incident_id=incident_id, kind=IncidentEventKind.ACKNOWLEDGED, at=now,
                                         actor=user, message=note)
    return bool(changed)


@dataclass
class EvaluationResult:
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    firing: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"opened={len(self.opened)} resolved={len(self.resolved)} firing={self.firing} "
                f"errors={len(self.errors)}")


def evaluate_rules(*, now: datetime | None = None, rules=None) -> EvaluationResult:
    """Evaluate every enabled rule (or the given ones) once; see the module docstring."""
    now = now or timezone.now()
    result = EvaluationResult()
    rules = list(rules if rules is not None else AlertRule.objects.all())
    open_incidents: dict[int, dict[str, Incident]] = {}
    for incident in Incident.objects.filter(status=IncidentStatus.OPEN, rule__in=[r.pk for r in rules]):
        open_incidents.setdefault(incident.rule_id, {})[incident.label_key] = incident
    for rule in rules:
        current = open_incidents.get(rule.pk, {})
        if not rule.enabled or rule.signal not in SIGNALS:
            for incident in current.values():
                with translation.override(settings.LANGUAGE_CODE):
                    why = _("The rule was disabled.") if not rule.enabled else _("The rule's signal no longer exists.")
                if resolve_incident(incident_id=incident.pk, value=None, now=now, message=why):
                    result.resolved.append(incident.pk)
            continue
        try:
            _evaluate_rule(rule, current, now=now, result=result)
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
            # No data is not "clear": this rule's open incidents stay open.
            log.exception("alert rule %s (%s) could not be evaluated", rule.pk, rule.signal)
            result.errors.append(f"{rule.name}: {type(exc).__name__}: {exc}")
    return result


def _evaluate_rule(rule: AlertRule, current: dict[str, Incident], *, now: datetime, result: EvaluationResult) -> None:
    values = {label_key(labels): (labels, value) for labels, value in rule_series(rule, now=now)}
    for key, (labels, value) in values.items():
        if not condition_holds(rule, value):
            continue
        result.firing += 1
        incident = current.get(key)
        if incident is None:
            opened = open_incident(rule=rule, labels=labels, value=value, now=now)
            if opened is not None:
                result.opened.append(opened.pk)
        else:
            Incident.objects.filter(pk=incident.pk, status=IncidentStatus.OPEN).update(
                last_value=value, last_evaluated_at=now)
    for key, incident in current.items():
        if key in values and condition_holds(rule, values[key][1]):
            continue
        value = values[key][1] if key in values else None
        if resolve_incident(incident_id=incident.pk, value=value, now=now):
            result.resolved.append(incident.pk)


# --- who evaluates --------------------------------------------------------------------------


def claim_evaluation(*, now: datetime | None = None, interval: timedelta = EVALUATION_INTERVAL) -> bool:
    """Take this interval's evaluation: True for exactly one caller per interval, whichever
    process asks first (one conditional UPDATE of the "alert-evaluator" row)."""
    now = now or timezone.now()
    Heartbeat.objects.get_or_create(name=EVALUATOR, defaults={"beat_at": now - interval - timedelta(seconds=1)})
    return bool(
        Heartbeat.objects.filter(name=EVALUATOR, beat_at__lte=now - interval).update(
            beat_at=now, host=socket.gethostname()[:255], pid=os.getpid()
        )
    )


def last_evaluation() -> Heartbeat | None:
    return Heartbeat.objects.filter(name=EVALUATOR).first()


def run_evaluation(*, now: datetime | None = None, force: bool = False, send: bool = True) -> EvaluationResult | None:
    """Evaluate if this interval's evaluation is ours (or `force`), then send what is due.
    None when another evaluator had the interval."""
    now = now or timezone.now()
    if not force and not claim_evaluation(now=now):
        return None
    result = evaluate_rules(now=now)
    if send:
        send_due_incident_notifications()
    return result


# --- the installed defaults -----------------------------------------------------------------


@dataclass(frozen=True)
class DefaultRule:
    key: str
    name: str
    description: str
    signal: str
    comparison: str
    threshold: float
    window_minutes: int
    severity: str


DEFAULT_RULES: tuple[DefaultRule, ...] = (
    DefaultRule(
        "provider-outage-stuck-attempts", gettext_noop("Provider outage: stuck payment attempts"),
        gettext_noop("Many payment attempts of one provider are still pending or unknown within ten minutes. "
                     "Check the provider's status page and the system page; re-checks continue on their own."),
        "provider_stuck_attempts", Comparison.GTE, 20, 10, Severity.CRITICAL,
    ),
    DefaultRule(
        "provider-outage-check-errors", gettext_noop("Provider outage: check error rate"),
        gettext_noop("More than half of the checks of one provider failed within ten minutes (timeouts, "
                     "connection or HTTP errors)."),
        "provider_check_error_rate", Comparison.GT, 50, 10, Severity.CRITICAL,
    ),
    DefaultRule(
        "unreturned-backlog", gettext_noop("Unreturned backlog above its threshold"),
        gettext_noop("More unreturned orders than usual: look at the dashboard's causes and providers."),
        "unreturned_backlog", Comparison.GT, 1000, 15, Severity.WARNING,
    ),
    DefaultRule(
        "task-cluster-down", gettext_noop("Task cluster down"),
        gettext_noop("The task cluster has not run its heartbeat for more than two minutes: no re-checks, "
                     "sweeps or emails run. Start `manage.py qcluster` (or `make run`)."),
        "cluster_heartbeat_age", Comparison.GT, 120, 2, Severity.CRITICAL,
    ),
    DefaultRule(
        "callback-signature-failures", gettext_noop("Spike of callback signature failures"),
        gettext_noop("Many provider callbacks failed their signature check: a rotated or wrong webhook secret, "
                     "or someone forging callbacks."),
        "callback_signature_failures", Comparison.GTE, 10, 5, Severity.WARNING,
    ),
    DefaultRule(
        "sla-breaches", gettext_noop("Tickets breaching their SLA"),
        gettext_noop("Open tickets are past their first-response or resolution due time."),
        "tickets_breaching_sla", Comparison.GTE, 1, 1, Severity.WARNING,
    ),
)


def install_default_rules() -> list[AlertRule]:
    """Create the default rules that do not exist yet (by key). Existing ones, edited or not, are
    left exactly as they are. Channels: `ALERT_EMAILS` (else the support leads) and
    `ALERT_WEBHOOK_URLS`. Runs after every migrate; returns the rules it created."""
    existing = set(AlertRule.objects.exclude(key="").values_list("key", flat=True))
    emails = list(getattr(settings, "ALERT_EMAILS", []))
    webhooks = list(getattr(settings, "ALERT_WEBHOOK_URLS", []))
    created = []
    with translation.override(settings.LANGUAGE_CODE):
        for spec in DEFAULT_RULES:
            if spec.key in existing:
                continue
            try:
                with transaction.atomic():
                    created.append(AlertRule.objects.create(
                        key=spec.key, name=_(spec.name), description=_(spec.description), signal=spec.signal,
                        comparison=spec.comparison, threshold=spec.threshold, window_minutes=spec.window_minutes,
                        severity=spec.severity, email_recipients="\n".join(emails), email_leads=not emails,
                        webhook_urls="\n".join(webhooks), enabled=True,
                    ))
            except IntegrityError:  # a concurrent migrate installed it first
                continue
    return created


def install_default_rules_after_migrate(**kwargs) -> None:
    if kwargs.get("app_config") is not None and kwargs["app_config"].label != "backoffice":
        return
    install_default_rules()
