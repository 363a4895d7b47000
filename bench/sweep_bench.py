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
import os
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


class Phases:
    """Wall time spent in each step of the sweep, by wrapping the functions `orders.sweep` calls.

    The wrappers cost a few microseconds per batch; "other" is claiming the batch, loading
    the Order rows and committing.
    """

    STEPS = ("gather_evidence", "diagnose_many", "apply_diagnoses")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STEPS, 0.0)

    def __enter__(self) -> "Phases":
        import orders.sweep as sweep

        self._saved = {name: getattr(sweep, name) for name in self.STEPS}
        for name, fn in self._saved.items():
            setattr(sweep, name, self._timed(name, fn))
        return self

    def __exit__(self, *exc) -> None:
        import orders.sweep as sweep

        for name, fn in self._saved.items():
            setattr(sweep, name, fn)

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
        return wrapper


def _backend_cpu() -> float | None:
    """CPU seconds used so far by this connection's PostgreSQL backend (local server only)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _outcome(report) -> dict[str, int]:
    c = report.counts
    return {"flagged": c.flagged, "changed": c.changed, "unflagged": c.unflagged, "unchanged": c.unchanged}


def run(ds: Dataset, *, runs: int = 3, idle_runs: int = 15, profile: bool = False, log=print) -> Result:
    from orders.sweep import sweep_unreturned

    full: list[float] = []
    outcomes: list[dict[str, int]] = []
    breakdowns: list[dict[str, float]] = []
    cpu: list[tuple[float, float | None]] = []
    causes: Counter = Counter()
    log(f"sweep: {runs} full run(s) over {ds.orders:,} orders with {ds.due:,} due")
    for n in range(1, runs + 1):
        reset_s = reset(ds)
        backend0, cpu0 = _backend_cpu(), time.process_time()
        with Phases() as phases:
            started = time.perf_counter()
            report = sweep_unreturned(now=ds.anchor)
            seconds = time.perf_counter() - started
        backend1 = _backend_cpu()
        cpu.append((time.process_time() - cpu0,
                    backend1 - backend0 if backend0 is not None and backend1 is not None else None))
        steps = {**phases.seconds, "other (claim, load orders, commit)": seconds - sum(phases.seconds.values())}
        breakdowns.append(steps)
        if report.orders != ds.due:
            raise RuntimeError(f"the sweep looked at {report.orders} orders, expected {ds.due}")
        full.append(seconds)
        outcomes.append(_outcome(report))
        log(f"  run {n}: {seconds:6.2f} s  ({report.orders / seconds:,.0f} orders/s, {report.batches} batches; "
            f"{_outcome(report)}; reset {reset_s:.1f} s)")
        log("         " + ", ".join(f"{name} {value:.2f} s" for name, value in steps.items()))
        python_cpu, pg_cpu = cpu[-1]
        log(f"         CPU: Python {python_cpu:.2f} s, PostgreSQL backend "
            + (f"{pg_cpu:.2f} s" if pg_cpu is not None else "unknown"))
    with connection.cursor() as cursor:
        cursor.execute("""SELECT o.stuck_cause, count(*) FROM orders_order o JOIN bench_sweep_snapshot s USING (id)
                          GROUP BY 1 ORDER BY 2 DESC""")
        causes.update({cause or "(not unreturned)": n for cause, n in cursor.fetchall()})

    # Two sweeps at once, as two task workers would run them: SKIP LOCKED gives them disjoint batches.
    from bench.worker import run_alongside

    pairs: list[float] = []
    for n in range(1, runs + 1):
        reset(ds)
        mine, theirs, seconds = run_alongside(["sweep", ds.anchor.isoformat()], lambda: sweep_unreturned(now=ds.anchor))
        if mine.orders + theirs["orders"] != ds.due:
            raise RuntimeError(f"two sweeps looked at {mine.orders} + {theirs['orders']} orders, expected {ds.due}")
        pairs.append(seconds)
        log(f"  two workers, run {n}: {seconds:6.2f} s ({mine.orders:,} + {theirs['orders']:,} orders)")
    pair_seconds = median(pairs)

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
    # The target is for the sweep as the task cluster runs it: with a backlog, every worker of
    # a cluster process (two by default) sweeps at once (orders.tasks.sweep_unreturned_orders).
    ok = pair_seconds <= FULL_TARGET_S and idle_median <= IDLE_TARGET_MS
    rate = ds.due / full_median
    headline = [
        f"full sweep, {ds.due:,} due of {ds.orders:,}, two task workers (the default cluster): median "
        f"{pair_seconds:.2f} s, target <= {FULL_TARGET_S:.0f} s  [{'ok' if pair_seconds <= FULL_TARGET_S else 'MISSED'}]",
        f"one worker alone: median {full_median:.2f} s ({rate:,.0f} orders/s)",
        f"sweep with nothing due: median {idle_median:.1f} ms, target <= {IDLE_TARGET_MS:.0f} ms  "
        f"[{'ok' if idle_median <= IDLE_TARGET_MS else 'MISSED'}]",
    ]
    outcome = outcomes[-1] if outcomes else {}
    median_run = sorted(range(len(full)), key=full.__getitem__)[len(full) // 2] if full else None
    python_cpu, pg_cpu = cpu[median_run]
    cpu_line = f"{full[median_run]:.2f} s wall: Python {python_cpu:.2f} s CPU" + (
        f", PostgreSQL backend {pg_cpu:.2f} s CPU" if pg_cpu is not None else "")
    per_batch = full[median_run] / max(ds.due / 1000, 1) * 1000
    step_rows = "\n".join(f"| `{name}` | {value:.2f} s | {value / full[median_run] * 100:.0f} % |"
                          for name, value in breakdowns[median_run].items()) if full else ""
    cause_rows = "\n".join(f"| {cause} | {n:,} |" for cause, n in causes.most_common())
    markdown = f"""
What is measured: `orders.sweep.sweep_unreturned()` end to end (wall clock): claiming and loading
batches of 1,000 due orders (`FOR UPDATE SKIP LOCKED`, one statement), loading their evidence
(`gather_evidence`), diagnosing (`diagnose_many`) and writing verdicts and events
(`apply_diagnoses`), committed per batch; first as the task cluster runs it on a backlog (the
scheduled task asks the other workers to sweep alongside, so with the default two workers two
processes sweep at once, SKIP LOCKED handing them disjoint batches), then in one process alone.
Then the same call with nothing due.

Data: {ds.orders:,} orders (20 merchants, 15-minute threshold), {ds.counts.get('orders_paymentattempt', 0):,} payment
attempts, {ds.counts.get('orders_paymentcheck', 0):,} checks, {ds.counts.get('orders_providercallback', 0):,} signed
callbacks, {ds.counts.get('orders_orderevent', 0):,} events (`bench/dataset.py`). Most orders are terminal with
`sweep_due_at` NULL; {ds.due:,} are due, spread evenly over the whole id range, with a mix of evidence (open
`unknown`/`pending` attempts with timed-out or answered checks, lost callbacks, paid orders with and without
confirmation failures, submitted orders without attempts, declined payments, duplicate payments, orders already
flagged whose cause stays or changes, flagged orders with news younger than the threshold, which are unflagged).
About 1 % of the other orders are flagged or younger than the threshold, with their next look in the future.
The sweep runs with `now` = the moment the dataset was generated, so the work does not drift as it ages.
Between runs the due set is restored and the tables vacuumed (not timed), so every run does the same work:
{outcome.get('flagged', 0):,} flagged,
{outcome.get('changed', 0):,} diagnosis changed, {outcome.get('unflagged', 0):,} unflagged,
{outcome.get('unchanged', 0):,} unchanged.

Command: `make bench` or `.venv/bin/python bench/run.py --only sweep`.

| measurement | runs | median | all runs | target | result |
| --- | --- | --- | --- | --- | --- |
| full sweep, {ds.due:,} due, two task workers (two processes, the default cluster) | {len(pairs)} | **{pair_seconds:.2f} s** ({ds.due / pair_seconds:,.0f} orders/s) | {', '.join(f'{s:.2f}' for s in pairs)} s | ≤ {FULL_TARGET_S:.0f} s | {'met' if pair_seconds <= FULL_TARGET_S else '**missed**'} |
| full sweep, one worker alone | {len(full)} | {full_median:.2f} s ({rate:,.0f} orders/s) | {', '.join(f'{s:.2f}' for s in full)} s | | |
| sweep with nothing due | {len(idle)} | **{idle_median:.1f} ms** | first {idle[0]:.1f} ms, max {max(idle):.1f} ms | ≤ {IDLE_TARGET_MS:.0f} ms | {'met' if idle_median <= IDLE_TARGET_MS else '**missed**'} |

The two-worker row runs a second `sweep_unreturned()` in another process at the same moment, as the
scheduled task does when more than one batch is due on PostgreSQL (`SWEEP_WORKERS`, default the
cluster's `Q_WORKERS`). One worker alone takes about twice as long: its Python and PostgreSQL's
work take turns on one connection. The first sweep with nothing due right
after a full one is slower than the rest: its index scan still meets the entries of the row versions
the full sweep replaced, and marks them dead for the next scans.

Where the time goes in the median run ({cpu_line}):

| step | seconds | share |
| --- | --- | --- |
{step_rows}

Per 1,000-order batch that is about {per_batch:.0f} ms in one worker. What it is made of (measured on
this data while writing the benchmark):

* `apply_diagnoses`: the verdicts are copied (`COPY`) into a staging table and applied with one
  `UPDATE ... FROM` (every row changes `sweep_due_at`, an indexed column, so no update is HOT and
  each writes an entry into every index of `orders_order`: about 60 ms of PostgreSQL time per
  1,000 orders); the events go in with `COPY` too.
* `gather_evidence`: four queries and building the evidence objects in Python.
* Loading: Django's psycopg 3 `timestamptz` loader is pure Python (about 2.5 µs per value against
  0.3 µs for psycopg's own C loader); the batch loads only the columns the sweep reads.
* `diagnose_many`: about 35 µs per order.

Causes of the due orders after a run:

| cause | orders |
| --- | --- |
{cause_rows}
"""
    return Result(key="sweep", title="Unreturned sweep", ok=ok, headline=headline, markdown=markdown,
                  extra={"full": full, "idle": idle, "pair": pair_seconds, "pairs": pairs, "profile": profile_text})
