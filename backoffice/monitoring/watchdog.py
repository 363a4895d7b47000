"""Alert evaluation from outside the task cluster.

The "task cluster down" rule cannot be evaluated by the cluster that is down, so evaluation
also runs in a daemon thread of other processes: `manage.py up` (the supervisor of the demo
and of single-machine installs) and gunicorn workers (`post_worker_init` hook), and in
`manage.py evaluate_alerts --loop`. Every one of them tries each `period`; the claim in
`alerts.run_evaluation` lets one evaluation through per interval, wherever it runs.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, connection

log = logging.getLogger(__name__)

# Give a cluster that starts beside us time for its first heartbeat (the scheduler looks for
# due schedules about every 30 s), or every start would page "cluster down" for a minute.
START_DELAY = 150.0
PERIOD = 30.0

_started: threading.Thread | None = None
_lock = threading.Lock()


def evaluate_once() -> str:
    """One round: evaluate if this interval is ours, and say what happened."""
    from backoffice.monitoring.alerts import run_evaluation

    result = run_evaluation()
    return "skipped (evaluated elsewhere)" if result is None else str(result)


def loop_round() -> str:
    """A round of a long-running loop: a fresh connection if the old one broke or aged, and
    none held between rounds (nor SQLite's file)."""
    close_old_connections()
    try:
        return evaluate_once()
    finally:
        connection.close()


def run_forever(*, period: float = PERIOD, start_delay: float = 0.0, stop: threading.Event | None = None,
                on_round=None) -> None:
    """Evaluate every `period` until `stop` is set; a failed round is logged and the next one
    runs. `on_round` receives each round's outcome (the command prints it)."""
    stop = stop or threading.Event()
    if stop.wait(start_delay):
        return
    while True:
        started = time.monotonic()
        try:
            outcome = loop_round()
            log.debug("alert watchdog: %s", outcome)
            if on_round is not None:
                on_round(outcome)
        except Exception:  # noqa: BLE001 - a failed round (database restarting) must not end the thread
            log.exception("alert watchdog: evaluation failed")
        if stop.wait(max(1.0, period - (time.monotonic() - started))):
            return


def start_watchdog(*, period: float = PERIOD, start_delay: float = START_DELAY) -> threading.Thread:
    """Start the evaluation thread of this process once (later calls return the same thread)."""
    global _started
    with _lock:
        if _started is None or not _started.is_alive():
            _started = threading.Thread(
                target=run_forever, kwargs={"period": period, "start_delay": start_delay},
                name="alert-watchdog", daemon=True,
            )
            _started.start()
        return _started
