"""Engine counters in the database (`orders.telemetry`): upserted in one statement after commit,
exact under concurrent writers, and fed by the re-check engine and the callback endpoint."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from orders import telemetry
from orders.models import PaymentCheck, TelemetryCounter
from orders.recheck import check_attempts
from orders.telemetry import CALLBACKS, CHECK_LATENCY, CHECKS, Increment

from .engine_helpers import ENGINE_ACTOR, new_order, pay_at_sandbox, pending_order, run_in_threads
from .engine_helpers import sandbox  # noqa: F401 - fixture
from .test_webhooks import deliver, payload, signed_headers


def value(name: str, **labels: str) -> int:
    row = TelemetryCounter.objects.filter(name=name, labels_key=telemetry.labels_key(labels)).first()
    return row.value if row else 0


def upserts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries
            if "INSERT INTO orders_telemetrycounter" in q["sql"] and "ON CONFLICT" in q["sql"]]


def values(name: str) -> dict[str, int]:
    return {row.labels_key: row.value for row in TelemetryCounter.objects.filter(name=name)}


# --- the counters themselves --------------------------------------------------------------------


@pytest.mark.django_db
def test_increments_are_upserted_in_one_statement_after_commit(django_capture_on_commit_callbacks):
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            telemetry.add_many([
                ("c", {"provider": "sandbox", "outcome": "succeeded"}, 2),
                Increment("c", {"outcome": "succeeded", "provider": "sandbox"}, 3),  # same labels, other order
                ("c", {"provider": "sandbox", "outcome": "failed"}, 1),
            ])
            assert not TelemetryCounter.objects.exists()  # nothing written inside the transaction

    assert len(upserts(queries)) == 1
    assert value("c", provider="sandbox", outcome="succeeded") == 5
    assert value("c", provider="sandbox", outcome="failed") == 1


@pytest.mark.django_db
def test_a_second_batch_adds_to_the_stored_value(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.add("c", {"provider": "sandbox"}, 4)
    with django_capture_on_commit_callbacks(execute=True):
        telemetry.add("c", {"provider": "sandbox"})

    row = TelemetryCounter.objects.get(name="c")
    assert row.value == 5
    assert row.labels == {"provider": "sandbox"}


@pytest.mark.django_db
def test_nothing_is_written_when_the_transaction_rolls_back(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            telemetry.add("c", {"provider": "sandbox"})
            raise RuntimeError("rolled back")

    assert not TelemetryCounter.objects.exists()


def test_histogram_increments_count_each_value_in_one_bucket_and_keep_sum_and_count():
    increments = telemetry.histogram_increments("lat", {"provider": "p"}, [0.01, 0.05, 0.07, 0.3, 12.0],
                                                buckets=[0.05, 0.1, 1.0])

    by_name = {(i.name, i.labels.get("le")): i.by for i in increments}
    assert by_name == {
        ("lat_bucket", "0.05"): 2,  # le is inclusive: 0.05 falls in the 0.05 bucket
        ("lat_bucket", "0.1"): 1,
        ("lat_bucket", "1.0"): 1,
        ("lat_bucket", "+Inf"): 1,
        ("lat_sum", None): round((0.01 + 0.05 + 0.07 + 0.3 + 12.0) * telemetry.SUM_SCALE),
        ("lat_count", None): 5,
    }


def test_no_values_means_no_increments():
    assert telemetry.histogram_increments("lat", {"provider": "p"}, []) == []


@pytest.mark.django_db
def test_a_failing_write_is_logged_and_never_raised(django_capture_on_commit_callbacks, caplog, monkeypatch):
    with django_capture_on_commit_callbacks() as callbacks:
        telemetry.add("c", {"provider": "sandbox"}, 3)

    def gone(*args, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(connection, "cursor", gone)
    for callback in callbacks:
        callback()  # the engine's work is done: a lost increment must not turn it into an error
    monkeypatch.undo()

    assert "3 counter increments were lost" in caplog.text
    assert not TelemetryCounter.objects.exists()


def test_names_and_labels_that_do_not_fit_are_refused_before_any_sql():
    with pytest.raises(ValueError):
        telemetry.add("x" * 65, {"k": "v"})
    with pytest.raises(ValueError):
        telemetry.add("c", {"k": "v" * 300})


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_increment():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite has one writer)")

    def writer():
        for _ in range(20):
            telemetry.add_many([("c", {"provider": "a"}, 1), ("c", {"provider": "b"}, 2)])

    outcomes = run_in_threads(*[writer] * 4)

    assert not [o for o in outcomes if isinstance(o, BaseException)]
    assert value("c", provider="a") == 80
    assert value("c", provider="b") == 160


# --- fed by the engine ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_recheck_batch_counts_its_checks_and_latencies_in_one_statement(
    sandbox, django_capture_on_commit_callbacks  # noqa: F811
):
    sandbox(pending_seconds=0)
    attempts = [pay_at_sandbox(new_order()) for _ in range(3)]

    # One batch by construction (recheck_due would claim again if an answer left one due).
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        report = check_attempts([a.pk for a in attempts], source=PaymentCheck.Source.SCHEDULED, actor=ENGINE_ACTOR)

    assert report.checked == 3
    labels = {"provider": "sandbox", "source": "scheduled", "result": "answer", "outcome": "succeeded"}
    assert value(CHECKS, **labels) == 3
    assert value(f"{CHECK_LATENCY}_count", provider="sandbox") == 3
    assert sum(values(f"{CHECK_LATENCY}_bucket").values()) == 3
    # The sum is the checks' own latencies (a fast local sandbox may answer within a millisecond).
    latencies_ms = PaymentCheck.objects.filter(attempt__in=attempts).values_list("latency_ms", flat=True)
    assert value(f"{CHECK_LATENCY}_sum", provider="sandbox") == sum(latencies_ms) * 1000  # microseconds
    assert len(upserts(queries)) == 1


@pytest.mark.django_db
def test_provider_faults_are_counted_as_errors_by_kind(sandbox, django_capture_on_commit_callbacks):  # noqa: F811
    sandbox(error_rate=1.0)
    _order, attempt = pending_order()

    with django_capture_on_commit_callbacks(execute=True):
        check_attempts([attempt.pk], source=PaymentCheck.Source.MANUAL, actor=ENGINE_ACTOR)

    (check,) = PaymentCheck.objects.filter(attempt=attempt)
    assert value(CHECKS, provider="sandbox", source="manual", result="error", outcome=check.error_kind) == 1


@pytest.mark.django_db
def test_a_callback_is_counted_with_its_signature_and_outcome_and_its_check(
    client, settings, django_capture_on_commit_callbacks
):
    _order, attempt = pending_order()
    body = payload(attempt)

    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, body, signed_headers(body, secret=settings.SANDBOX_WEBHOOK_SECRET, msg_id="evt_t_1"))
        deliver(client, body, signed_headers(body, secret=settings.SANDBOX_WEBHOOK_SECRET, msg_id="evt_t_1"))
        deliver(client, body, signed_headers(body, secret="whsec_" + "QUJD" * 8, msg_id="evt_t_2"))

    assert value(CALLBACKS, provider="sandbox", signature="valid", outcome="applied") == 1
    assert value(CALLBACKS, provider="sandbox", signature="valid", outcome="duplicate") == 1
    assert value(CALLBACKS, provider="sandbox", signature="invalid", outcome="recheck") == 1
    assert value(CHECKS, provider="sandbox", source="callback", result="answer", outcome="succeeded") == 1
