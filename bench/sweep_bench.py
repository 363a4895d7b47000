"""Sweep benchmark: `sweep_unreturned` over the dataset's due orders, then with nothing due.

Every full run starts from the same state: the due orders' flag columns and `sweep_due_at`
are restored from `bench_sweep_snapshot`, the events written by earlier runs are deleted,
and the touched tables are vacuumed (outside the timing), so each run flags, re-diagnoses
and unflags the same orders. The sweep runs with `now` = the dataset's anchor (see
`bench/dataset.py`), so the work does not drift as the dataset ages.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections import Counter

from django.db import connection

from bench.dataset import Dataset
from bench.report import Result, median

FULL_TARGET_S = 10.0
IDLE_TARGET_MS = 20.0


def reset(ds: Dataset) -> float:
    """Put the due orders back as the dataset left them; returns the seconds it took."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("""
            UPDATE orders_order o
               SET stuck_since = s.stuck_since, stuck_cause = s.stuck_cause, stuck_category = s.stuck_category,
                   needs_review = s.needs_review, resolved_at = s.resolved_at, sweep_due_at = s.sweep_due_at
              FROM bench_sweep_snapshot s
             WHERE o.id = s.id
               AND (o.stuck_since, o.stuck_cause, o.stuck_category, o.needs_review, o.resolved_at, o.sweep_due_at)
                   IS DISTINCT FROM
                   (s.stuck_since, s.stuck_cause, s.stuck_category, s.needs_review, s.resolved_at, s.sweep_due_at)
        """)
        cursor.execute("DELETE FROM orders_orderevent WHERE id > %s", [ds.baseline["orders_orderevent"]])
        # Dead row versions of the previous run would otherwise make each run slower than the last.
        cursor.execute("VACUUM (ANALYZE) orders_order")
        cursor.execute("VACUUM (ANALYZE) orders_orderevent")
        cursor.execute("SELECT count(*) FROM orders_order WHERE sweep_due_at <= %s", [ds.anchor])
        due = cursor.fetchone()[0]
    if due != ds.due:
        raise RuntimeError(f"after the reset {due} orders are due, expected {ds.due}")
    return time.monotonic() - started


def _outcome(report) -> dict[str, int]:
    c = report.counts
    return {"flagged": c.flagged, "changed": c.changed, "unflagged": c.unflagged, "unchanged": c.unchanged}


def run(ds: Dataset, *, runs: int = 3, idle_runs: int = 15, profile: bool = False, log=print) -> Result:
    from orders.sweep import sweep_unreturned

    full: list[float] = []
    outcomes: list[dict[str, int]] = []
    causes: Counter = Counter()
    log(f"sweep: {runs} full run(s) over {ds.orders:,} orders with {ds.due:,} due")
    for n in range(1, runs + 1):
        reset_s = reset(ds)
        started = time.perf_counter()
        report = sweep_unreturned(now=ds.anchor)
        seconds = time.perf_counter() - started
        if report.orders != ds.due:
            raise RuntimeError(f"the sweep looked at {report.orders} orders, expected {ds.due}")
        full.append(seconds)
        outcomes.append(_outcome(report))
        log(f"  run {n}: {seconds:6.2f} s  ({report.orders / seconds:,.0f} orders/s, {report.batches} batches; "
            f"{_outcome(report)}; reset {reset_s:.1f} s)")
    with connection.cursor() as cursor:
        cursor.execute("""SELECT stuck_cause, count(*) FROM orders_order o JOIN bench_sweep_snapshot s USING (id)
                          GROUP BY 1 ORDER BY 2 DESC""")
        causes.update({cause or "(not unreturned)": n for cause, n in cursor.fetchall()})

    idle: list[float] = []
    for _ in range(idle_runs):
        started = time.perf_counter()
        report = sweep_unreturned(now=ds.anchor)
        idle.append((time.perf_counter() - started) * 1000)
        if report.orders:
            raise RuntimeError(f"the idle sweep found {report.orders} orders")
    log(f"  idle: median {median(idle):.1f} ms, first {idle[0]:.1f} ms, max {max(idle):.1f} ms over {idle_runs} runs")

    profile_text = ""
    if profile:
        reset(ds)
        profiler = cProfile.Profile()
        profiler.enable()
        sweep_unreturned(now=ds.anchor)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
        profile_text = out.getvalue()
        log(profile_text)

    full_median, idle_median = median(full), median(idle)
    ok = full_median <= FULL_TARGET_S and idle_median <= IDLE_TARGET_MS
    rate = ds.due / full_median
    headline = [
        f"full sweep, {ds.due:,} due of {ds.orders:,}: median {full_median:.2f} s ({rate:,.0f} orders/s), "
        f"target <= {FULL_TARGET_S:.0f} s  [{'ok' if full_median <= FULL_TARGET_S else 'MISSED'}]",
        f"sweep with nothing due: median {idle_median:.1f} ms, target <= {IDLE_TARGET_MS:.0f} ms  "
        f"[{'ok' if idle_median <= IDLE_TARGET_MS else 'MISSED'}]",
    ]
    outcome = outcomes[-1] if outcomes else {}
    cause_rows = "\n".join(f"| {cause} | {n:,} |" for cause, n in causes.most_common())
    markdown = f"""
What is measured: `orders.sweep.sweep_unreturned()` end to end (wall clock, one process, one
connection): claiming batches of 1,000 due orders (`FOR UPDATE SKIP LOCKED`), loading their
evidence (`gather_evidence`), diagnosing (`diagnose_many`) and writing verdicts and events
(`apply_diagnoses`), committed per batch. Then the same call with nothing due.

Data: {ds.orders:,} orders (20 merchants, 15-minute threshold), {ds.counts.get('orders_paymentattempt', 0):,} payment
attempts, {ds.counts.get('orders_paymentcheck', 0):,} checks, {ds.counts.get('orders_providercallback', 0):,} signed
callbacks, {ds.counts.get('orders_orderevent', 0):,} events (`bench/dataset.py`). Most orders are terminal with
`sweep_due_at` NULL; {ds.due:,} are due, spread evenly over the whole id range, with a mix of evidence (open
`unknown`/`pending` attempts with timed-out or answered checks, lost callbacks, paid orders with and without
confirmation failures, submitted orders without attempts, declined payments, duplicate payments, young orders,
orders already flagged with an unchanged cause, flagged orders to unflag). Between runs the due set is restored
and the tables vacuumed (not timed), so every run does the same work: {outcome.get('flagged', 0):,} flagged,
{outcome.get('changed', 0):,} diagnosis changed, {outcome.get('unflagged', 0):,} unflagged,
{outcome.get('unchanged', 0):,} unchanged.

Command: `make bench` or `.venv/bin/python bench/run.py --only sweep`.

| measurement | runs | median | all runs | target | result |
| --- | --- | --- | --- | --- | --- |
| full sweep, {ds.due:,} due | {len(full)} | **{full_median:.2f} s** ({rate:,.0f} orders/s) | {', '.join(f'{s:.2f}' for s in full)} s | ≤ {FULL_TARGET_S:.0f} s | {'met' if full_median <= FULL_TARGET_S else '**missed**'} |
| sweep with nothing due | {len(idle)} | **{idle_median:.1f} ms** | first {idle[0]:.1f} ms, max {max(idle):.1f} ms | ≤ {IDLE_TARGET_MS:.0f} ms | {'met' if idle_median <= IDLE_TARGET_MS else '**missed**'} |

Causes of the due orders after a run:

| cause | orders |
| --- | --- |
{cause_rows}
"""
    return Result(key="sweep", title="Unreturned sweep", ok=ok, headline=headline, markdown=markdown,
                  extra={"full": full, "idle": idle, "profile": profile_text})
