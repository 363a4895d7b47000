"""Re-check throughput: `recheck_due()` against the sandbox provider over loopback HTTP.

Each run creates N payments at the sandbox (with `pending_seconds=0`, so every query returns
the final result, `succeeded`), N `payment_pending` orders with one `pending` attempt each that
carries the sandbox's reference and is due, then times `recheck_due()` end to end: claiming,
querying with `max_in_flight` calls in flight, journaling each check, applying each result
(attempt -> succeeded, order -> paid, confirmation enqueued on the ORM broker) and committing.
The rows a run created are deleted afterwards, so the dataset stays as generated.

The sandbox runs in its own process by default, as a real provider would (`--sandbox thread`
runs it inside the benchmark process, where its request handling competes for the GIL).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from bench.dataset import PROVIDER, Dataset
from bench.report import Result, median

ROOT = Path(__file__).resolve().parent.parent
TARGET = 120.0  # attempts per second
AMOUNT = Decimal("25.00")
CURRENCY = "CNY"


class Sandbox:
    """The sandbox provider, in a child process (default) or a thread of this one."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.url = ""
        self._proc: subprocess.Popen | None = None
        self._server = None
        self.client: httpx.Client | None = None

    def __enter__(self) -> "Sandbox":
        knobs = {"latency_ms": 0, "pending_seconds": 0.0, "seed": 1}
        if self.mode == "thread":
            from orders.providers.sandbox import Knobs, SandboxServer

            self._server = SandboxServer(Knobs(**knobs))
            self._server.start()
            self.url = self._server.url
        else:
            env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "orders.providers.sandbox", "--port", "0", "--latency-ms", "0",
                 "--pending-seconds", "0", "--seed", "1"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = self._proc.stdout.readline()
                if not line:
                    break
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    break
            if not self.url:
                self._proc.kill()
                raise RuntimeError("the sandbox provider did not start")
            # Keep draining its output so it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in self._proc.stdout], daemon=True).start()
        self.client = httpx.Client(base_url=self.url, timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self._server is not None:
            self._server.stop()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def set_knobs(self, **values) -> None:
        if self._server is not None:
            self._server.set_knobs(**values)
        else:
            self.client.post("/v1/control", json=values).raise_for_status()

    def create_payments(self, requests: list[dict]) -> list[str]:
        """Create the payments (latency 0 while we do) and return their references, in order."""
        if self._server is not None:
            replies = [self._server.sandbox.create(r) for r in requests]
            return [json.loads(reply.body)["provider_reference"] for reply in replies]

        def create(request: dict) -> str:
            response = self.client.post("/v1/payments", json=request)
            response.raise_for_status()
            return response.json()["provider_reference"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(create, requests))


def _point_provider_at(url: str) -> None:
    from orders.providers.registry import clear_cache

    providers = settings.PAYMENT_PROVIDERS
    if PROVIDER not in providers:
        raise RuntimeError(f"settings.PAYMENT_PROVIDERS has no {PROVIDER!r} provider (SANDBOX_PROVIDER_URL configures it)")
    providers[PROVIDER] = {**providers[PROVIDER], "base_url": url}
    clear_cache()


def _delete(cursor, table: str, where: str, params: list) -> None:
    """Delete rows and, first, every row that references them (whatever app's table it is in:
    support tickets, approvals, ... follow orders around)."""
    cursor.execute("""
        SELECT child.relname, attribute.attname
          FROM pg_constraint fk
          JOIN pg_class child ON child.oid = fk.conrelid
          JOIN pg_attribute attribute ON attribute.attrelid = fk.conrelid AND attribute.attnum = fk.conkey[1]
         WHERE fk.contype = 'f' AND fk.confrelid = %s::regclass AND fk.conrelid <> fk.confrelid
    """, [table])
    for child, column in cursor.fetchall():
        _delete(cursor, child, f"{column} IN (SELECT id FROM {table} WHERE {where})", params)
    cursor.execute(f"DELETE FROM {table} WHERE {where}", params)


def _cleanup(ds: Dataset) -> None:
    """Delete every order created after the dataset was generated, with everything hanging off it."""
    with connection.cursor() as cursor:
        _delete(cursor, "orders_order", "id > %s", [ds.baseline["orders_order"]])
        cursor.execute("DELETE FROM django_q_ormq")


def _keep_dataset_attempts_unclaimed() -> None:
    # The dataset schedules its open attempts 30 days after its anchor; a dataset older than
    # that would have them claimed here, so push them ahead again (only the nullness matters
    # to the sweep).
    with connection.cursor() as cursor:
        cursor.execute("""UPDATE orders_paymentattempt SET next_check_at = now() + interval '30 days'
                          WHERE next_check_at <= now() + interval '1 day'""")


def _prepare(sandbox: Sandbox, n: int, run_id: str) -> None:
    from orders.models import Merchant, Order, PaymentAttempt

    merchant = Merchant.objects.order_by("code").first()
    requests = [
        {"idempotency_key": f"rck-{run_id}-{i}", "amount": str(AMOUNT), "currency": CURRENCY,
         "order_reference": f"RCK-{run_id}-{i:05d}", "merchant": merchant.code}
        for i in range(n)
    ]
    references = sandbox.create_payments(requests)
    now = timezone.now()
    started = now - timedelta(minutes=20)
    with transaction.atomic():
        orders = Order.objects.bulk_create([
            Order(merchant=merchant, reference=r["order_reference"], customer_name="Bench Customer",
                  customer_email="bench@example.com", shipping_address="No. 1 Example Road", amount=AMOUNT,
                  currency=CURRENCY, status="payment_pending", submitted_at=started, status_changed_at=started,
                  sweep_due_at=now + merchant.stuck_after)
            for r in requests
        ], batch_size=1000)
        PaymentAttempt.objects.bulk_create([
            PaymentAttempt(order=order, provider=PROVIDER, provider_reference=ref, idempotency_key=r["idempotency_key"],
                           amount=AMOUNT, currency=CURRENCY, status="pending", created_at=started,
                           status_changed_at=started, next_check_at=now - timedelta(minutes=1))
            for order, ref, r in zip(orders, references, requests)
        ], batch_size=1000)


class RecordTimer:
    """Time spent journaling and applying answers (`orders.recheck._record`, on whichever
    threads call it) and claiming batches, by wrapping the module's functions during a run."""

    def __init__(self) -> None:
        self.record = 0.0
        self.claim = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def installed(self):
        import orders.recheck as recheck

        saved_record, saved_claim = recheck._record, recheck.claim_due_attempts

        def record(*args, **kwargs):
            started = time.perf_counter()
            try:
                return saved_record(*args, **kwargs)
            finally:
                with self._lock:
                    self.record += time.perf_counter() - started

        def claim(*args, **kwargs):
            started = time.perf_counter()
            try:
                return saved_claim(*args, **kwargs)
            finally:
                self.claim += time.perf_counter() - started

        recheck._record, recheck.claim_due_attempts = record, claim
        try:
            yield self
        finally:
            recheck._record, recheck.claim_due_attempts = saved_record, saved_claim


def _due_attempts():
    from orders.models import PaymentAttempt

    return list(PaymentAttempt.objects.filter(next_check_at__lte=timezone.now(), provider=PROVIDER)
                .select_related("order__merchant"))


def provider_only_rate(sandbox: Sandbox, n: int, in_flight: int, latency_ms: int) -> float:
    """Provider calls alone, `in_flight` at a time, no database work: what the HTTP side can do."""
    from orders.providers.registry import get_provider

    sandbox.set_knobs(latency_ms=0)
    _prepare(sandbox, n, uuid.uuid4().hex[:8])
    references = [a.provider_reference for a in _due_attempts()]
    provider = get_provider(PROVIDER)
    sandbox.set_knobs(latency_ms=latency_ms)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(provider.query, references))
    return len(references) / (time.perf_counter() - started)


def database_only(sandbox: Sandbox, n: int) -> tuple[float, float, float]:
    """Journaling and applying answers already in hand, one after another on one connection,
    as the engine does (`check_and_apply`, the batch's callback lookup done once).

    Returns the milliseconds per attempt, the share of them spent in Python, and the
    statements per attempt.
    """
    from orders.actors import Actor
    from orders.models import ProviderCallback
    from orders.policy import PolicyBook
    from orders.providers.registry import get_provider
    from orders.services import check_and_apply

    sandbox.set_knobs(latency_ms=0)
    _prepare(sandbox, n, uuid.uuid4().hex[:8])
    provider = get_provider(PROVIDER)
    answers = [(a, provider.query(a.provider_reference)) for a in _due_attempts()]
    policies, system = PolicyBook(), Actor.system()
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    # Counting through an execute wrapper, not the DEBUG query log, which would slow the run.
    with connection.execute_wrapper(count):
        cpu0, started = time.process_time(), time.perf_counter()
        with_callback = set(ProviderCallback.objects.filter(
            attempt_id__in=[a.pk for a, _ in answers], signature_valid=True).values_list("attempt_id", flat=True))
        for attempt, result in answers:
            check_and_apply(attempt=attempt, source="scheduled", actor=system, result=result, policies=policies,
                            has_callback=attempt.pk in with_callback)
            # The confirmation the scheduled path enqueues after commit is part of the work.
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    return seconds / len(answers) * 1000, cpu / seconds, statements / len(answers)


def two_workers_rate(sandbox: Sandbox, n: int, latency_ms: int) -> tuple[float, int]:
    """`recheck_due()` in this process and in a second one at the same time (as two task
    workers would run it): they claim disjoint batches with SKIP LOCKED."""
    from bench.worker import run_alongside
    from orders.recheck import recheck_due

    sandbox.set_knobs(latency_ms=0)
    _prepare(sandbox, n, uuid.uuid4().hex[:8])
    sandbox.set_knobs(latency_ms=latency_ms)
    mine, theirs, seconds = run_alongside(
        ["recheck"], lambda: recheck_due(batch_size=200, time_budget=3600),
        env={"SANDBOX_PROVIDER_URL": sandbox.url},
    )
    checked = mine.checked + theirs["checked"]
    if checked != n:
        raise RuntimeError(f"two workers checked {checked} of {n}")
    return checked / seconds, theirs["checked"]


def run(ds: Dataset, *, attempts: int = 3000, runs: int = 3, latency_ms: int = 50, in_flight: int = 8,
        sandbox_mode: str = "process", profile: bool = False, log=print) -> Result:
    from orders.models import RecheckPolicy
    from orders.recheck import recheck_due

    limit = in_flight * 1000 / latency_ms if latency_ms else float("inf")
    writers = settings.RECHECK_DB_WRITERS
    where = (f"{writers} writer threads, each on its own connection (RECHECK_DB_WRITERS)" if writers > 1
             else "the calling thread")
    log(f"recheck: {runs} run(s) of {attempts:,} due attempts, sandbox latency {latency_ms} ms, "
        f"{in_flight} in flight (limit {limit:.0f}/s), sandbox in a {sandbox_mode}; answers recorded on {where}")
    RecheckPolicy.objects.update_or_create(provider=PROVIDER, merchant=None, defaults={"max_in_flight": in_flight})
    _keep_dataset_attempts_unclaimed()
    _cleanup(ds)
    rates: list[float] = []
    details: list[dict] = []
    profile_text = ""
    with Sandbox(sandbox_mode) as sandbox:
        _point_provider_at(sandbox.url)
        for n in range(1, runs + 1 + int(profile)):
            profiling = profile and n == runs + 1
            sandbox.set_knobs(latency_ms=0)
            _prepare(sandbox, attempts, uuid.uuid4().hex[:8])
            sandbox.set_knobs(latency_ms=latency_ms)
            timer = RecordTimer()
            profiler = cProfile.Profile() if profiling else None
            cpu0 = time.process_time()
            with timer.installed():
                if profiler:
                    profiler.enable()
                started = time.perf_counter()
                report = recheck_due(batch_size=200, time_budget=3600)
                seconds = time.perf_counter() - started
                if profiler:
                    profiler.disable()
            cpu = time.process_time() - cpu0
            _cleanup(ds)
            if report.checked != attempts or report.errors or report.changed != attempts:
                sample = sorted({item.error for item in report.items if item.error})[:5]
                raise RuntimeError(f"run {n}: checked {report.checked}, errors {report.errors}, "
                                   f"changed {report.changed} of {attempts}; errors seen: {sample}")
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
                profile_text = out.getvalue()
                log(profile_text)
                continue
            rate = attempts / seconds
            rates.append(rate)
            detail = {
                "seconds": seconds, "rate": rate,
                "record_ms": timer.record / attempts * 1000, "claim_s": timer.claim,
                "busy": (timer.record + timer.claim) / seconds, "cpu": cpu / seconds,
            }
            details.append(detail)
            log(f"  run {n}: {rate:6.1f} attempts/s ({seconds:.1f} s); journaling+applying {detail['record_ms']:.2f} ms "
                f"per attempt, on average {detail['busy']:.1f} at it at once; process CPU {detail['cpu'] * 100:.0f} % "
                f"of one core")
        db_ms, db_python, queries = database_only(sandbox, 300)
        _cleanup(ds)
        http_rate = provider_only_rate(sandbox, min(attempts, 1000), in_flight, latency_ms)
        _cleanup(ds)
        log(f"  controls: provider calls alone {http_rate:.1f}/s; journaling+applying alone {db_ms:.2f} ms/attempt "
            f"({db_python * 100:.0f} % of it Python, {queries:.1f} statements)")
        pair_rate, pair_child = two_workers_rate(sandbox, attempts, latency_ms)
        _cleanup(ds)
        log(f"  two workers (two processes, {in_flight} in flight each): {pair_rate:.1f} attempts/s "
            f"({pair_child} of {attempts} by the second)")

    rate = median(rates)
    mid = sorted(details, key=lambda d: d["rate"])[len(details) // 2]
    ok = rate >= TARGET
    serial_cap = 1000 / db_ms
    headline = [
        f"{attempts:,} attempts, {in_flight} in flight, {latency_ms} ms per call: median {rate:.1f} attempts/s "
        f"(limit {limit:.0f}/s), target >= {TARGET:.0f}/s  [{'ok' if ok else 'MISSED'}]",
        f"answers recorded on {where}: {mid['record_ms']:.2f} ms per attempt in the run, {db_ms:.2f} ms alone "
        f"({queries:.1f} statements)",
        f"provider calls alone: {http_rate:.1f}/s; two workers (processes): {pair_rate:.1f} attempts/s",
    ]
    why = f"""Provider calls overlap; each answer is then journaled and applied in one transaction of
{queries:.0f} statements (lock order and attempt, insert the check, update the attempt, the
duplicate-payment lookup, update the order, the events in one insert, commit; then the
confirmation task's insert), {db_python * 100:.0f} % of it Python. One connection doing that serially
manages 1 / {db_ms:.2f} ms = {serial_cap:.0f}/s, so the answers go to {writers} writer thread(s), each
on its own connection: while one waits for PostgreSQL, another runs Python. What remains is
CPU: the threads share one interpreter (GIL; the process ran at {mid['cpu'] * 100:.0f} % of a core), and
the sandbox and PostgreSQL share the same 2 cores. Throughput also scales with workers (claims
use SKIP LOCKED)."""
    markdown = f"""
What is measured: `orders.recheck.recheck_due()` end to end (wall clock): claiming batches of 200 due
attempts (`FOR UPDATE SKIP LOCKED`), querying the provider with `RecheckPolicy.max_in_flight` =
{in_flight} calls in flight, journaling every answer and applying it in one transaction
(`check_and_apply`: check journaled, attempt -> succeeded, order -> paid, confirmation task enqueued
on the ORM broker after commit) on {where}.

Data: {attempts:,} `payment_pending` orders with one due `pending` attempt each, whose payments exist at
the sandbox provider; the sandbox (`SandboxServer`, in its own process, loopback HTTP/1.1 keep-alive)
answers every query after `latency_ms={latency_ms}` with the final result (`pending_seconds=0`, no
faults). The orders live next to the {ds.orders:,}-order dataset of the sweep benchmark and are deleted
after each run. The ceiling is {in_flight} in flight / {latency_ms} ms = **{limit:.0f} attempts/s**.

Command: `make bench` or `.venv/bin/python bench/run.py --only recheck`
(`--attempts`, `--latency-ms`, `--in-flight`, `--sandbox thread` to vary it).

| measurement | runs | median | all runs | target | result |
| --- | --- | --- | --- | --- | --- |
| re-check throughput, one worker | {len(rates)} | **{rate:.1f} attempts/s** ({rate / limit * 100:.0f} % of the ceiling) | {', '.join(f'{r:.1f}' for r in rates)} | ≥ {TARGET:.0f}/s | {'met' if ok else '**missed**'} |

Controls, to see which side limits it:

| control | figure |
| --- | --- |
| provider calls alone ({in_flight} threads, no database work) | {http_rate:.1f} calls/s |
| journaling + applying alone, answers in hand, one connection, one at a time | {db_ms:.2f} ms per attempt ({db_python * 100:.0f} % of it Python); {serial_cap:.0f} attempts/s serially |
| the same inside the median run | {mid['record_ms']:.2f} ms per attempt, on average {mid['busy']:.1f} attempts at it at once |
| statements per attempt | {queries:.1f} (one transaction plus the broker insert) |
| two workers at once (two processes, {in_flight} in flight each, disjoint batches) | {pair_rate:.1f} attempts/s |

Why: {why}
"""
    return Result(key="recheck", title="Re-check throughput", ok=ok, headline=headline, markdown=markdown,
                  extra={"rates": rates, "details": details, "queries": queries, "profile": profile_text,
                         "http_rate": http_rate, "db_ms": db_ms, "pair_rate": pair_rate, "writers": writers})
