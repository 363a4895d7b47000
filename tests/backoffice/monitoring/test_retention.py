"""Retention: callback bodies and check responses past their period are emptied in batches,
the rows and events stay, runs are recorded and pick up where the last one got through."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from backoffice.monitoring.retention import journal_sizes, prune_journals_task, retention_status
from orders.models import OrderEvent, PaymentCheck, ProviderCallback, RetentionRun
from orders.retention import prune_journals
from orders.schedules import SCHEDULES
from orders.webhooks import process_callback
from tests.orders.engine_helpers import pending_order

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def journals(settings):
    """Callbacks and checks of 200, 100, 89 and 1 days ago, with payloads."""
    settings.RETENTION_CALLBACK_DAYS = 90
    settings.RETENTION_CHECK_DAYS = 30
    now = timezone.now()
    order, attempt = pending_order()
    callbacks, checks = {}, {}
    for days in (200, 100, 89, 1):
        callbacks[days] = ProviderCallback.objects.create(
            provider="sandbox", event_id=f"evt_{days}", received_at=now - days * DAY, attempt=attempt,
            body='{"data": {"customer_email": "wang.fang@example.com"}}', headers={"webhook-id": f"evt_{days}"},
            signature_valid=True, processed_at=now - days * DAY, outcome="applied",
        )
        checks[days] = PaymentCheck.objects.create(
            attempt=attempt, source="scheduled", reported_status="pending", response_excerpt='{"status": "pending"}',
            checked_at=now - days * DAY,
        )
    # A fault without an excerpt: its error sentence is ours, not the provider's, and stays.
    checks["error"] = PaymentCheck.objects.create(attempt=attempt, source="scheduled", error_kind="timeout",
                                                  error_message="The provider did not answer in time.",
                                                  checked_at=now - 150 * DAY)
    return {"now": now, "order": order, "attempt": attempt, "callbacks": callbacks, "checks": checks}


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def test_payloads_past_their_period_are_emptied_and_the_rows_kept(journals):
    events_before = OrderEvent.objects.count()

    report = prune_journals(now=journals["now"])

    assert (report.callbacks, report.checks, report.complete) == (2, 3, True)
    for days, callback in journals["callbacks"].items():
        callback = fresh(callback)
        if days > 90:
            assert (callback.body, callback.headers) == ("", {})
            assert callback.body_pruned_at == journals["now"]
            assert (callback.event_id, callback.outcome, callback.signature_valid) == (f"evt_{days}", "applied", True)
        else:
            assert callback.body and callback.headers and callback.body_pruned_at is None
    for days in (200, 100, 89):  # older than the 30 days for checks
        check = fresh(journals["checks"][days])
        assert (check.response_excerpt, check.reported_status) == ("", "pending")
        assert check.response_pruned_at == journals["now"]
    assert fresh(journals["checks"][1]).response_excerpt
    error = fresh(journals["checks"]["error"])
    assert error.error_message == "The provider did not answer in time."
    assert error.response_pruned_at is None  # nothing to prune
    assert ProviderCallback.objects.count() == 4
    assert OrderEvent.objects.count() == events_before


def test_an_attempts_copy_of_the_last_answer_goes_once_it_was_not_checked_since_the_cutoff(journals):
    attempt = journals["attempt"]
    type(attempt).objects.filter(pk=attempt.pk).update(
        last_raw_response={"status": "pending", "payer": "wang.fang@example.com"},
        last_checked_at=journals["now"] - 40 * DAY,
    )
    _order, recent = pending_order()
    type(recent).objects.filter(pk=recent.pk).update(last_raw_response={"status": "pending"},
                                                      last_checked_at=journals["now"] - DAY)
    PaymentCheck.objects.create(attempt=recent, source="scheduled", reported_status="pending",
                                response_excerpt="{}", checked_at=journals["now"] - 60 * DAY)

    prune_journals(now=journals["now"])

    assert fresh(attempt).last_raw_response is None
    assert fresh(recent).last_raw_response == {"status": "pending"}  # checked since: its answer is current


def test_pruning_twice_changes_nothing_the_second_time(journals):
    prune_journals(now=journals["now"])
    first_stamp = fresh(journals["callbacks"][200]).body_pruned_at

    report = prune_journals(now=journals["now"] + timedelta(hours=1))

    assert (report.callbacks, report.checks) == (0, 0)
    assert fresh(journals["callbacks"][200]).body_pruned_at == first_stamp


def test_the_next_run_starts_where_the_last_got_through(journals):
    prune_journals(now=journals["now"])
    run = RetentionRun.objects.get()
    assert run.complete and run.finished_at is not None
    assert run.callbacks_pruned_through == journals["now"] - 90 * DAY
    assert run.checks_pruned_through == journals["now"] - 30 * DAY
    # Written later with an old time: behind the last run's position, so only --from-start sees it.
    late = PaymentCheck.objects.create(attempt=journals["attempt"], source="scheduled", reported_status="pending",
                                       response_excerpt="{}", checked_at=journals["now"] - 300 * DAY)

    later = journals["now"] + 30 * DAY
    assert prune_journals(now=later).checks == 1  # the 1-day-old check is 31 days old then
    assert fresh(late).response_excerpt == "{}"
    assert prune_journals(now=later, from_start=True).checks == 1
    assert fresh(late).response_excerpt == ""


def test_batches_are_small_and_ordered(journals):
    report = prune_journals(now=journals["now"], batch_size=1)

    assert (report.callbacks, report.checks, report.complete) == (2, 3, True)


def test_a_run_out_of_time_records_how_far_it_got(journals):
    report = prune_journals(now=journals["now"], time_budget=-1)

    assert not report.complete
    run = RetentionRun.objects.get()
    assert not run.complete
    assert run.callbacks_pruned_through is None

    assert prune_journals(now=journals["now"]).complete
    assert fresh(journals["callbacks"][200]).body == ""


def test_a_dry_run_counts_and_changes_nothing(journals):
    report = prune_journals(now=journals["now"], dry_run=True)

    assert (report.callbacks, report.checks) == (2, 3)
    assert fresh(journals["callbacks"][200]).body
    assert not RetentionRun.objects.exists()


def test_the_command(journals):
    out = io.StringIO()
    call_command("prune_journals", "--dry-run", stdout=out)
    assert "Would prune 2 callback bodies" in out.getvalue()
    assert fresh(journals["callbacks"][200]).body

    out = io.StringIO()
    call_command("prune_journals", stdout=out)
    assert "Pruned 2 callback bodies" in out.getvalue()
    assert fresh(journals["callbacks"][200]).body == ""


def test_a_pruned_callback_cannot_be_replayed_and_says_why(journals):
    prune_journals(now=journals["now"])
    callback = fresh(journals["callbacks"][200])

    assert process_callback(callback) is False

    callback = fresh(callback)
    assert callback.outcome == "failed"
    assert "pruned" in callback.error


def test_a_redelivery_of_a_pruned_callback_is_still_a_duplicate(journals, client, settings):
    from tests.orders.test_webhooks import deliver, payload, signed_headers

    prune_journals(now=journals["now"])
    body = payload(journals["attempt"])

    response = deliver(client, body, signed_headers(body, secret=settings.SANDBOX_WEBHOOK_SECRET, msg_id="evt_200"))

    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert fresh(journals["callbacks"][200]).body == ""


def test_the_daily_task_is_scheduled_and_prunes(journals):
    spec = next(spec for spec in SCHEDULES if spec["name"] == "prune-journals")
    assert spec == {"name": "prune-journals", "func": "backoffice.monitoring.retention.prune_journals_task",
                    "minutes": 1440}

    assert prune_journals_task().startswith("callbacks=2 checks=")


def test_retention_status(journals, settings):
    status = retention_status(now=journals["now"])
    assert (status.callback_days, status.check_days) == (90, 30)
    assert status.last_run is None and status.overdue

    prune_journals(now=journals["now"])
    status = retention_status(now=journals["now"] + timedelta(hours=3))
    assert status.last_run_at == journals["now"]
    assert (status.last_run.callbacks_pruned, status.last_run.checks_pruned) == (2, 3)
    assert not status.overdue
    assert retention_status(now=journals["now"] + 3 * DAY).overdue


def test_journal_sizes(journals):
    sizes = {size.name: size for size in journal_sizes()}

    assert set(sizes) == {"callbacks", "checks", "events", "telemetry_counters"}
    if sizes["callbacks"].estimated:  # PostgreSQL after ANALYZE: an estimate
        assert sizes["callbacks"].rows >= 0
    else:
        assert sizes["callbacks"].rows == 4
        assert sizes["checks"].rows == 5
        assert sizes["events"].rows == OrderEvent.objects.count()


def test_retention_settings_must_be_at_least_a_day():
    env = {**os.environ, "DEBUG": "1", "RETENTION_CHECK_DAYS": "0"}

    result = subprocess.run([sys.executable, "-c", "import backoffice.settings"], env=env, capture_output=True,
                            text=True, cwd=settings_module_root(), timeout=60)

    assert result.returncode != 0
    assert "RETENTION_CHECK_DAYS" in result.stderr


def settings_module_root() -> str:
    import backoffice

    return os.path.dirname(os.path.dirname(backoffice.__file__))


def _task_result(name: str, *, stopped) -> None:
    from django_q.models import Task

    Task.objects.create(id=name, name=name, func="orders.tasks.recheck_due_payments", started=stopped,
                        stopped=stopped, success=True, attempt_count=1)


def test_task_results_older_than_their_retention_are_deleted_and_recent_ones_kept(settings):
    from django_q.models import Task

    from backoffice.monitoring.retention import prune_task_results

    settings.RETENTION_TASK_RESULT_DAYS = 7
    now = timezone.now()
    _task_result("old", stopped=now - timedelta(days=8))
    _task_result("recent", stopped=now - timedelta(days=6))

    assert prune_task_results(now=now) == 1
    assert list(Task.objects.values_list("name", flat=True)) == ["recent"]
