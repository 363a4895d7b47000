#!/usr/bin/env python
"""Benchmarks of the re-check engine, the unreturned sweep, the order worklist and the API on PostgreSQL.

    .venv/bin/python bench/run.py                    # everything (what `make bench` runs)
    .venv/bin/python bench/run.py --only recheck     # re-check throughput against the sandbox
    .venv/bin/python bench/run.py --only sweep       # sweep over 1,000,000 orders, 50,000 due
    .venv/bin/python bench/run.py --only admin       # the order worklist against a stock ModelAdmin
    .venv/bin/python bench/run.py --only api         # one merchant's order list; intake through gunicorn
    .venv/bin/python bench/run.py --orders 200000 --due 10000 --no-docs   # a quicker look

Needs only PostgreSQL at BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/recovery_bench):
the database is created and migrated when missing, the dataset is generated once and reused
while its parameters, the generator and the migrations stay the same. The figures are
printed and written to docs/performance.md between the benchmark's markers (unless --no-docs).

Not part of the test suite: pytest collects `tests/` only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a script: import the project and `bench` as a package, never bench/ modules by bare name.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/recovery_bench"
# The test suites own these; the bench truncates tables, so it must never touch them.
FORBIDDEN_DATABASES = {"test", "test_test", "postgres", "template0", "template1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["recheck", "sweep", "admin", "api"], help="run one benchmark (default: all)")
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders in the dataset (default %(default)s)")
    parser.add_argument("--due", type=int, default=50_000, help="orders due for the sweep (default %(default)s)")
    parser.add_argument("--attempts", type=int, default=3000, help="attempts per re-check run (default %(default)s)")
    parser.add_argument("--recheck-runs", type=int, default=3, help="re-check runs; the median counts (default 3)")
    parser.add_argument("--sweep-runs", type=int, default=3, help="full sweeps; the median counts (default 3)")
    parser.add_argument("--idle-runs", type=int, default=15, help="sweeps with nothing due (default 15)")
    parser.add_argument("--latency-ms", type=int, default=50, help="sandbox latency per request (default 50)")
    parser.add_argument("--in-flight", type=int, default=8, help="RecheckPolicy.max_in_flight (default 8)")
    parser.add_argument("--sandbox", choices=["process", "thread"], default="process",
                        help="run the sandbox provider in its own process (default, like a real provider) "
                             "or in a thread of the benchmark process")
    parser.add_argument("--admin-runs", type=int, default=15, help="requests per worklist page (default 15)")
    parser.add_argument("--stock-runs", type=int, default=5, help="requests per stock admin page (default 5)")
    parser.add_argument("--api-runs", type=int, default=30, help="requests per API list page (default 30)")
    parser.add_argument("--api-clients", type=int, default=8, help="concurrent intake clients (default 8)")
    parser.add_argument("--api-orders", type=int, default=250, help="orders each intake client creates (default 250)")
    parser.add_argument("--api-intake-runs", type=int, default=3,
                        help="intake runs with keys; the target applies to the median (default 3)")
    parser.add_argument("--api-configs", action="store_true",
                        help="also measure intake with other gunicorn worker/thread settings")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the dataset even if it matches")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each benchmark (slower)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    return parser.parse_args(argv)


def ensure_database(url: str) -> None:
    """Create the benchmark database if it does not exist (never a test database)."""
    import psycopg

    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name or name in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to benchmark in database {name!r}: choose another BENCH_DATABASE_URL")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            print(f"database: creating {name}")
            conn.execute(f'CREATE DATABASE "{name}"')


# One benchmark run per database at a time: runs reset and delete each other's rows.
RUN_LOCK_KEY = 0x62656E6368  # "bench"
_run_lock = None  # the connection holding the advisory lock, kept open until the process ends


def hold_run_lock(url: str) -> None:
    """Wait until no other benchmark run uses this database, then keep it to ourselves."""
    global _run_lock
    import psycopg

    _run_lock = psycopg.connect(url, autocommit=True, application_name="bench/run.py (run lock)")
    if not _run_lock.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK_KEY]).fetchone()[0]:
        print("database: another benchmark run is using it; waiting for it to finish ...", flush=True)
        started = time.monotonic()
        _run_lock.execute("SELECT pg_advisory_lock(%s)", [RUN_LOCK_KEY])
        print(f"database: waited {time.monotonic() - started:.0f} s")


def setup_django(url: str, *, migrate: bool = True) -> None:
    os.environ["DATABASE_URL"] = url
    # Production settings: with DEBUG on, Django logs every statement (and its parameters) in
    # memory, which costs more Python time than some of the statements measured here.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-used-for-anything-real")
    # Configures the sandbox provider as a deployment would; the re-check benchmark points it
    # at its own sandbox server.
    os.environ.setdefault("SANDBOX_PROVIDER_URL", "http://127.0.0.1:8100")
    os.environ.setdefault("SANDBOX_WEBHOOK_SECRET", "whsec_YmVuY2gtb25seS13ZWJob29rLXNlY3JldC1rZXk=")
    os.environ["DJANGO_SETTINGS_MODULE"] = "backoffice.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    # Pages are rendered from the source tree (no collectstatic): plain static storage.
    settings.STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    if not migrate:
        return
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        print("database: migrating")
        started = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        print(f"database: migrated in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    ensure_database(url)
    hold_run_lock(url)
    setup_django(url)

    from bench import dataset, report

    machine = report.machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    ds = dataset.ensure(orders=args.orders, due=args.due, force=args.regenerate)
    results = []
    if args.only in (None, "sweep"):
        from bench import sweep_bench

        results.append(sweep_bench.run(ds, runs=args.sweep_runs, idle_runs=args.idle_runs, profile=args.profile))
    if args.only in (None, "recheck"):
        from bench import recheck_bench

        results.append(recheck_bench.run(
            ds, attempts=args.attempts, runs=args.recheck_runs, latency_ms=args.latency_ms,
            in_flight=args.in_flight, sandbox_mode=args.sandbox, profile=args.profile,
        ))
    if args.only in (None, "admin"):
        from bench import admin_bench

        results.append(admin_bench.run(ds, runs=args.admin_runs, stock_runs=args.stock_runs, profile=args.profile))
    if args.only in (None, "api"):
        from bench import api_bench

        results.append(api_bench.run(
            ds, database_url=url, list_runs=args.api_runs, clients=args.api_clients, per_client=args.api_orders,
            intake_runs=args.api_intake_runs,
            compare_configs=args.api_configs, profile=args.profile,
        ))
    print()
    for result in results:
        print(result.summary())
    if not args.no_docs:
        path = report.write(results, machine=machine, dataset=ds)
        print(f"\nwrote {path.relative_to(ROOT)}")
    return 1 if args.strict and not all(r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
