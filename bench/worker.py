"""A second engine worker in its own process, for the two-worker figures.

    python -m bench.worker recheck
    python -m bench.worker sweep <now as ISO 8601>

It sets Django up like `bench/run.py` (from the environment the parent passes on), prints
`ready`, waits for a line on stdin, runs the engine once, and prints a JSON line with what it
did and how long it took. Started and driven by `bench.worker.run_alongside`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_alongside(args: list[str], mine: Callable[[], Any], *, env: dict[str, str] | None = None) -> tuple[Any, dict, float]:
    """Run `mine()` here while a worker process runs `args`, started at the same moment.

    Returns what `mine()` returned, the worker's JSON report, and the wall time until both finished.
    """
    from django.db import connection

    child = subprocess.Popen([sys.executable, "-m", "bench.worker", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.strip() == "ready":
                break
            print(f"  (worker) {line.rstrip()}")
        else:
            raise RuntimeError(f"the second worker ({' '.join(args)}) did not start")
        connection.close()  # start from a fresh connection, like the worker
        child.stdin.write("go\n")
        child.stdin.flush()
        started = time.perf_counter()
        result = mine()
        mine_done = time.perf_counter() - started
        theirs = None
        for line in child.stdout:
            if line.startswith("{"):
                theirs = json.loads(line)
                break
            print(f"  (worker) {line.rstrip()}")
        if theirs is None:
            raise RuntimeError(f"the second worker ({' '.join(args)}) stopped without a report")
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return result, theirs, max(mine_done, theirs["seconds"])


def main(argv: list[str]) -> None:
    from bench.run import setup_django

    # The parent has migrated; a migration added since then must not hold this worker up.
    setup_django(os.environ["DATABASE_URL"], migrate=False)
    from django.db import connection

    kind = argv[0]
    if kind == "recheck":
        from bench.dataset import PROVIDER
        from orders.providers.registry import get_provider
        from orders.recheck import recheck_due

        get_provider(PROVIDER)
        work = lambda: recheck_due(batch_size=200, time_budget=3600)  # noqa: E731
        describe = lambda r: {"checked": r.checked}  # noqa: E731
    elif kind == "sweep":
        from datetime import datetime

        from orders.sweep import sweep_unreturned

        now = datetime.fromisoformat(argv[1])
        work = lambda: sweep_unreturned(now=now)  # noqa: E731
        describe = lambda r: {"orders": r.orders}  # noqa: E731
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    connection.ensure_connection()
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    report = work()
    print(json.dumps({**describe(report), "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
