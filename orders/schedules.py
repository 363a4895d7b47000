"""The recurring tasks, installed idempotently by name.

`orders` lists its own; other apps add theirs with `register_schedule` in their
`AppConfig.ready` (orders never imports them)."""

from __future__ import annotations

from django_q.models import Schedule

SCHEDULES: list[dict] = [
    {"name": "recheck-due-payments", "func": "orders.tasks.recheck_due_payments", "minutes": 1},
    {"name": "sweep-unreturned", "func": "orders.tasks.sweep_unreturned_orders", "minutes": 1},
    {"name": "retry-confirmations", "func": "orders.tasks.retry_confirmations", "minutes": 1},
    {"name": "purge-idempotency-keys", "func": "orders.tasks.purge_idempotency_keys", "minutes": 60},
]


def register_schedule(*, name: str, func: str, minutes: int) -> None:
    if all(spec["name"] != name for spec in SCHEDULES):
        SCHEDULES.append({"name": name, "func": func, "minutes": minutes})


def install_schedules() -> list[tuple[str, bool]]:
    done = []
    for spec in SCHEDULES:
        _schedule, created = Schedule.objects.update_or_create(
            name=spec["name"],
            defaults={"func": spec["func"], "schedule_type": Schedule.MINUTES, "minutes": spec["minutes"], "repeats": -1},
        )
        done.append((spec["name"], created))
    return done
