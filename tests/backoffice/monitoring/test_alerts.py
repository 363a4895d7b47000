"""Alert rules: the installed defaults, each firing and resolving from crafted data; label
filters and comparisons; who evaluates (the claim, the task, the command, the watchdog)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from backoffice.monitoring import alert_signals
from backoffice.monitoring.alerts import (
    DEFAULT_RULES,
    EVALUATOR,
    claim_evaluation,
    evaluate_rules,
    install_default_rules,
    label_key,
    run_evaluation,
)
from backoffice.monitoring.heartbeat import beat
from backoffice.monitoring.models import AlertRule, Heartbeat, Incident, IncidentEvent, IncidentStatus
from backoffice.monitoring.tasks import evaluate_alerts
from backoffice.monitoring.watchdog import evaluate_once
from orders.models import PaymentCheck, ProviderCallback, UnreturnedSnapshot
from orders.schedules import SCHEDULES
from orders.states import AttemptStatus
from support.models import TicketStatus
from support.services import change_status
from tests.backoffice.monitoring.alert_helpers import custom_rule, evaluate, incidents_of, minutes, rule
from tests.orders.engine_helpers import pending_order
from tests.support.factories import SYSTEM, SlaTargetFactory, open_ticket_for

pytestmark = pytest.mark.django_db


def assert_opens_then_resolves(alert_rule, *, fire_at, clear_at, labels=None, clear=None):
    evaluate(alert_rule, now=fire_at)
    [incident] = incidents_of(alert_rule)
    assert incident.status == IncidentStatus.OPEN
    if labels is not None:
        assert incident.labels == labels
    if clear is not None:
        clear()
    evaluate(alert_rule, now=clear_at)
    [incident] = incidents_of(alert_rule)
    assert incident.status == IncidentStatus.RESOLVED
    assert incident.resolved_at == clear_at
    assert [e.kind for e in incident.events.order_by("at", "id")] == ["opened", "resolved"]
    return incident


# --- the installed defaults -----------------------------------------------------------------


def test_the_defaults_are_installed_after_migrate():
    assert set(AlertRule.objects.exclude(key="").values_list("key", flat=True)) == {r.key for r in DEFAULT_RULES}
    cluster = AlertRule.objects.get(key="task-cluster-down")
    assert (cluster.signal, cluster.comparison, cluster.threshold) == ("cluster_heartbeat_age", "gt", 120)
    # No ALERT_EMAILS in the tests: the support leads are emailed.
    assert cluster.email_leads and cluster.email_recipients == ""


def test_installing_again_never_overwrites_an_edited_default_and_restores_nothing_else():
    rule("unreturned-backlog", threshold=99, enabled=False, name="Our backlog")

    assert install_default_rules() == []

    edited = AlertRule.objects.get(key="unreturned-backlog")
    assert (edited.threshold, edited.enabled, edited.name) == (99, False, "Our backlog")


def test_defaults_take_their_channels_from_the_environment(settings):
    AlertRule.objects.all().delete()
    settings.ALERT_EMAILS = ["ops@example.com", "pager@example.com"]
    settings.ALERT_WEBHOOK_URLS = ["https://chat.example.com/hook"]

    created = install_default_rules()

    assert len(created) == len(DEFAULT_RULES)
    assert all(r.email_list == ["ops@example.com", "pager@example.com"] and not r.email_leads for r in created)
    assert all(r.webhook_list == ["https://chat.example.com/hook"] for r in created)


def test_every_default_names_a_registered_signal():
    assert {r.signal for r in DEFAULT_RULES} <= set(alert_signals.SIGNALS)


# --- each default fires and resolves ------------------------------------------------------------


def test_provider_outage_by_stuck_attempts_fires_per_provider_and_resolves():
    for _ in range(20):
        pending_order(provider="sandbox", status=AttemptStatus.UNKNOWN)
    pending_order(provider="other", status=AttemptStatus.UNKNOWN)  # one stuck attempt elsewhere: quiet
    now = timezone.now()

    assert_opens_then_resolves(
        rule("provider-outage-stuck-attempts"), fire_at=now, clear_at=now + minutes(11), labels={"provider": "sandbox"}
    )


def test_attempts_waiting_for_the_customer_are_not_stuck_attempts():
    for _ in range(20):
        _order, attempt = pending_order(provider="sandbox")
        type(attempt).objects.filter(pk=attempt.pk).update(action_required="3ds")

    assert alert_signals.provider_stuck_attempts(minutes(10), timezone.now()) == []


def _checks(attempt, *, errors: int, ok: int, at):
    rows = [PaymentCheck(attempt=attempt, source="scheduled", error_kind="timeout", checked_at=at) for _ in range(errors)]
    rows += [PaymentCheck(attempt=attempt, source="scheduled", reported_status="pending", checked_at=at)
             for _ in range(ok)]
    PaymentCheck.objects.bulk_create(rows)


def test_provider_outage_by_check_error_rate_fires_above_half_and_resolves_when_it_drops():
    _order, attempt = pending_order(provider="sandbox")
    now = timezone.now()
    _checks(attempt, errors=6, ok=4, at=now - minutes(1))
    assert alert_signals.provider_check_error_rate(minutes(10), now) == [({"provider": "sandbox"}, 60.0)]

    assert_opens_then_resolves(
        rule("provider-outage-check-errors"), fire_at=now, clear_at=now + minutes(2), labels={"provider": "sandbox"},
        clear=lambda: _checks(attempt, errors=0, ok=10, at=now + minutes(1)),
    )


def test_the_error_rate_needs_enough_checks():
    _order, attempt = pending_order(provider="sandbox")
    now = timezone.now()
    _checks(attempt, errors=9, ok=0, at=now - minutes(1))

    assert alert_signals.provider_check_error_rate(minutes(10), now) == []


def test_the_unreturned_backlog_fires_above_its_threshold_and_resolves_on_the_next_snapshot():
    now = timezone.now()
    UnreturnedSnapshot.objects.create(taken_at=now - minutes(3), total=2500, needs_review=0)

    assert_opens_then_resolves(
        rule("unreturned-backlog"), fire_at=now, clear_at=now + minutes(5), labels={},
        clear=lambda: UnreturnedSnapshot.objects.create(taken_at=now + minutes(4), total=120, needs_review=0),
    )


def test_the_task_cluster_down_fires_without_a_heartbeat_and_resolves_when_it_beats():
    now = timezone.now()
    assert alert_signals.cluster_heartbeat_age(minutes(2), now) == [({}, alert_signals.MISSING_HEARTBEAT_AGE)]

    incident = assert_opens_then_resolves(
        rule("task-cluster-down"), fire_at=now, clear_at=now + minutes(1), clear=lambda: beat(now=now + minutes(1)),
    )
    assert incident.last_value == 0


def test_a_stale_heartbeat_fires_the_task_cluster_down():
    now = timezone.now()
    beat(now=now - timedelta(seconds=121))

    evaluate(rule("task-cluster-down"), now=now)

    [incident] = incidents_of(rule("task-cluster-down"))
    assert incident.last_value == pytest.approx(121, abs=1)


def test_a_spike_of_callback_signature_failures_fires_per_provider_and_resolves_after_the_window():
    now = timezone.now()
    ProviderCallback.objects.bulk_create([
        ProviderCallback(provider="sandbox", event_id=f"evt-{n}", received_at=now - minutes(1), signature_valid=False)
        for n in range(10)
    ] + [ProviderCallback(provider="sandbox", event_id="ok", received_at=now, signature_valid=True)])

    assert_opens_then_resolves(
        rule("callback-signature-failures"), fire_at=now, clear_at=now + minutes(6), labels={"provider": "sandbox"},
    )


def test_sla_breaches_fire_for_an_overdue_ticket_and_resolve_when_it_is_resolved():
    SlaTargetFactory(first_response=timedelta(hours=1), resolution=timedelta(hours=4))
    ticket = open_ticket_for()
    later = timezone.now() + timedelta(hours=2)  # first response overdue

    assert_opens_then_resolves(
        rule("sla-breaches"), fire_at=later, clear_at=later + minutes(1), labels={},
        clear=lambda: change_status(ticket=ticket, to=TicketStatus.RESOLVED, actor=SYSTEM),
    )


# --- conditions ---------------------------------------------------------------------------------


def test_a_label_filter_keeps_only_matching_label_sets():
    for _ in range(3):
        pending_order(provider="sandbox", status=AttemptStatus.UNKNOWN)
        pending_order(provider="other", status=AttemptStatus.UNKNOWN)
    only_other = custom_rule(signal="provider_stuck_attempts", threshold=2, comparison="gte", labels={"provider": "other"})

    evaluate(only_other)

    assert [i.labels for i in incidents_of(only_other)] == [{"provider": "other"}]


@pytest.mark.parametrize(
    ("comparison", "threshold", "fires"),
    [("gt", 10, False), ("gte", 10, True), ("lt", 11, True), ("lte", 9, False)],
)
def test_comparisons(comparison, threshold, fires):
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    alert_rule = custom_rule(comparison=comparison, threshold=threshold)

    evaluate(alert_rule)

    assert len(incidents_of(alert_rule)) == (1 if fires else 0)


def test_disabling_a_rule_resolves_its_open_incidents():
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    alert_rule = custom_rule()
    evaluate(alert_rule)

    alert_rule.enabled = False
    alert_rule.save()
    evaluate(alert_rule)

    [incident] = incidents_of(alert_rule)
    assert incident.status == IncidentStatus.RESOLVED
    assert "disabled" in incident.events.get(kind="resolved").message


def test_a_failing_signal_keeps_its_incidents_open_and_the_other_rules_run(monkeypatch):
    UnreturnedSnapshot.objects.create(total=10, needs_review=0)
    broken, healthy = custom_rule(name="broken"), custom_rule(name="healthy", signal="tickets_breaching_sla",
                                                               comparison="gte", threshold=0)
    evaluate(broken)

    def fail(window, now):
        raise RuntimeError("database went away")

    monkeypatch.setitem(alert_signals.SIGNALS, "unreturned_backlog",
                        alert_signals.SIGNALS["unreturned_backlog"].__class__(
                            **{**alert_signals.SIGNALS["unreturned_backlog"].__dict__, "compute": fail}))
    result = evaluate(broken, healthy)

    assert result.errors and "database went away" in result.errors[0]
    assert incidents_of(broken)[0].status == IncidentStatus.OPEN
    assert len(incidents_of(healthy)) == 1


def test_label_keys_are_canonical():
    assert label_key({"b": "2", "a": "1"}) == label_key({"a": "1", "b": "2"}) == "a=1,b=2"
    assert label_key({}) == ""


# --- who evaluates ------------------------------------------------------------------------------


def test_one_evaluation_per_interval_whoever_asks():
    now = timezone.now()

    assert claim_evaluation(now=now)
    assert not claim_evaluation(now=now + timedelta(seconds=10))
    assert claim_evaluation(now=now + timedelta(seconds=51))
    assert Heartbeat.objects.get(name=EVALUATOR).beat_at == now + timedelta(seconds=51)


def test_run_evaluation_skips_when_another_evaluator_had_the_interval():
    now = timezone.now()
    assert run_evaluation(now=now) is not None
    assert run_evaluation(now=now + timedelta(seconds=5)) is None
    assert run_evaluation(now=now + timedelta(seconds=5), force=True) is not None


def test_the_cluster_task_beats_before_it_evaluates_so_it_never_reports_itself_down():
    evaluate_alerts()

    cluster_down = rule("task-cluster-down")
    assert incidents_of(cluster_down) == []


def test_evaluation_is_scheduled_every_minute_with_its_sender():
    specs = {spec["name"]: spec for spec in SCHEDULES}

    assert specs["evaluate-alerts"]["func"] == "backoffice.monitoring.tasks.evaluate_alerts"
    assert specs["send-incident-notifications"]["minutes"] == 1


def test_the_command_evaluates_from_outside_the_cluster(capsys):
    call_command("evaluate_alerts")

    # Nothing beats in the test database: the command (unlike the cluster's task) sees the cluster down.
    assert Incident.objects.filter(rule__key="task-cluster-down", status="open").count() == 1
    call_command("evaluate_alerts")
    assert "Skipped" in capsys.readouterr().out


def test_the_watchdog_round_evaluates_once_per_interval():
    assert evaluate_once().startswith("opened=")
    assert evaluate_once().startswith("skipped")
    assert IncidentEvent.objects.filter(kind="opened", incident__rule__key="task-cluster-down").count() == 1


def test_evaluate_rules_defaults_to_every_rule():
    result = evaluate_rules()

    assert Incident.objects.get(id__in=result.opened, rule__key="task-cluster-down")
